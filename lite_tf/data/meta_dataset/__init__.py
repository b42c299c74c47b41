"""Meta-Dataset: its TFRecord layout and dataset_spec.json, the converter, the reader and its
episode sampler (the same draws and pixels as google-research/meta-dataset)."""
