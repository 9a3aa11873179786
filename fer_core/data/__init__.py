"""FER data sources decoded into one uint8 tensor data set (see ``FerDataset``)."""
