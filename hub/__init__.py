"""hgen.hub: the annotation hub (ingest, annotators, aggregation, knowledge base) and the simulated crowd."""
