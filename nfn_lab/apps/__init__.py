"""Applications built on the library: the README's main job (``make run``) and the demonstration (``make demo``)."""
