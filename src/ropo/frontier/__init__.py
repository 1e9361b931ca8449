"""The KL-frontier study: methods compared as curves of quality against sqrt(KL), not single points."""
