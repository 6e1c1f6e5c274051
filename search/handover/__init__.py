"""Handing over the chosen models: ``export`` (export-best: files checked by loading them back, a
report), ``final`` (the final training: the chosen architectures trained again, longer, on every
training image, over seeds), ``predict`` (an exported model on images), and ``written`` (the
manifests that let the tool replace what it wrote and nothing else).
"""
