"""rl2llm: the tested code behind "From Bellman to RLHF".

One module per idea; each module's docstring names the lecture that uses it.

* :mod:`rl2llm.mdp` — finite MDPs, grid worlds, gymnasium conversion (Lecture 1)
* :mod:`rl2llm.dp` — policy evaluation, value and policy iteration (Lecture 1)
* :mod:`rl2llm.plotting` — the book's figure style and shared plots
* :mod:`rl2llm.seeding` — the one seeding helper
"""

__version__ = "0.1.0"
