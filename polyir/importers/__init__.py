"""Graph -> other representations: a trainable torch module (torch.py), heyoka expressions
(heyoka.py) and ODE systems (heyoka_ode.py), NIR graphs (nir.py)."""
