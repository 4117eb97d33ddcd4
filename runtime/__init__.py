"""hgen.runtime: what runs on the device and is shared with the compiler (numpy only, never TensorFlow).

The confidence, gate, fusion and labour math lives here so that what the search measures is what the device runs.
"""
