"""Episode sources, by benchmark: `meta_dataset/`, `orbit/` and `vtab`; shared parts beside
them (`adapters`: what a source must provide; `in_memory`, `saved_episodes`, `tfds_source`,
`glyphs`: the demo data; `batches`: labelled batches for pre-training). Data never imports
learners."""
