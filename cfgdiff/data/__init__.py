"""Data: `cfgdiff prepare` (sources -> an HDF5 dataset file) and the dataset that training reads.

    prepare.py   prepare(PrepareConfig) (config.py): the conversion, resumable, in worker processes
    sources.py   source kinds, labels, splits, class maps, --classes/--limit selection
    archives.py  class folders as a folder, tar (or tar of tars) or zip;  npz.py  downsampled ImageNet
    builtin.py   builtin:shapes, generated procedurally
    decode.py    bytes -> RGB;  resize.py  area and ADM centre-crop downsampling
    pool.py      worker processes;  parts.py  resumable parts;  h5file.py  the file layout
    dataset.py   dataset_info, ImageDataset, read_images, read_labels

Nothing is imported here, so worker processes that unpickle a task do not import torch.
"""
