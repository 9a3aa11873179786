# syntax=docker/dockerfile:1
# One image for every process of a fer-study cluster: the Ray head, the GPU workers,
# the driver (`fer-study launch`) and the dashboard.
#
# Base: the official Ray GPU image, not nvidia/cuda + Python 3.11, because
#  - Ray refuses to join nodes whose Ray/Python versions differ; pinning the image tag
#    to one Ray release (and the py311 variant) keeps head, workers and driver identical;
#  - it already ships Python 3.11 (conda, on PATH), CUDA user-space libs, and a
#    non-root user `ray` (uid 1000, group users/100) that Ray's own tooling expects.
# torch itself comes from PyPI (its CUDA wheels bundle the CUDA runtime), so only the
# host NVIDIA driver matters on GPU nodes.
ARG RAY_VERSION=2.60.0
FROM rayproject/ray:${RAY_VERSION}-py311-gpu

ARG RAY_VERSION
ENV PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FER_STUDY_RUNS=/runs \
    FER_STUDY_CACHE=/home/ray/.cache/fer-study

# Shared checkpoint and artifact mount points, owned by the non-root user (a fresh named volume
# mounted here inherits this ownership).
USER root
RUN mkdir -p /runs /artifacts /home/ray/.cache/fer-study \
 && chown -R 1000:100 /runs /artifacts /home/ray/.cache

USER ray
WORKDIR /home/ray/fer-study

# Dependencies first (better layer caching): only the files pip needs to resolve them.
COPY --chown=1000:100 pyproject.toml constraints.txt README.md ./
COPY --chown=1000:100 fer_core ./fer_core
COPY --chown=1000:100 studies ./studies
COPY --chown=1000:100 search_spaces ./search_spaces

# constraints.txt pins the torch/torchvision pair (torch==2.14.1, torchvision==0.29.1);
# ray is pinned to the image's own release so pip never swaps the cluster's Ray.
RUN pip install -c constraints.txt "ray[tune]==${RAY_VERSION}" . \
 && fer-study --help >/dev/null \
 && python -c "import torch, torchvision, ray, optuna; print(torch.__version__, torchvision.__version__, ray.__version__, optuna.__version__)"

# Study names (`imbalance-ablation`) resolve from ./studies and ./search_spaces of the
# working directory; mount your own there or set FER_STUDY_DIR / FER_SPACE_DIR.
# `fer-study` lives in the image's Python env (/home/ray/anaconda3/bin), already on PATH.
CMD ["fer-study", "--help"]
