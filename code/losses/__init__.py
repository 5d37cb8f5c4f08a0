"""Losses: supervised segmentation losses (:mod:`losses.segmentation`) and the regularisers of
the scribble-supervised baselines (:mod:`losses.regularizers`)."""
