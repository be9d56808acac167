"""The hub: fleet data, model factory, roll-outs."""
