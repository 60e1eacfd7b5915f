"""psx's default sweep launcher (Hydra finds launchers in the hydra_plugins namespace package)."""
