"""rl2llm: the tested code behind "From Bellman to RLHF".

One module per idea; each module's docstring names the lecture that uses it.

* :mod:`rl2llm.mdp` — finite MDPs, grid worlds, gymnasium conversion (Lecture 1)
* :mod:`rl2llm.dp` — policy evaluation, value and policy iteration (Lecture 1)
* :mod:`rl2llm.policies` — softmax policies, tabular and a small network (Lecture 2; later chapters)
* :mod:`rl2llm.rollouts` — episodes in one shape, reward-to-go (Lecture 2; later chapters)
* :mod:`rl2llm.policy_gradient` — exact policy gradients and REINFORCE (Lecture 2)
* :mod:`rl2llm.td` — Monte Carlo, TD(0), SARSA, expected SARSA, (Double) Q-learning (Lecture 3)
* :mod:`rl2llm.dqn` — replay buffers, Q-networks, DQN and its fixes (Lecture 3)
* :mod:`rl2llm.advantages` — TD errors, n-step returns, GAE(lambda) with termination and truncation (Lecture 4)
* :mod:`rl2llm.actor_critic` — A2C on gymnasium's vector environments, shared or separate networks (Lecture 4)
* :mod:`rl2llm.trpo` — conjugate gradient, Fisher-vector products, KL line search, TRPO (Lecture 5)
* :mod:`rl2llm.ppo` — PPO with switches for each implementation detail, discrete and Gaussian policies (Lecture 6, planned)
* :mod:`rl2llm.corpora` — generated stories, arithmetic and code tasks with their checks (Parts III and IV, planned)
* :mod:`rl2llm.exercises` — checkers for the exercises a reader solves in code
* :mod:`rl2llm.plotting` — the book's figure style and shared plots
* :mod:`rl2llm.seeding` — the one seeding helper
* :mod:`rl2llm.progress` — progress of long loops, for the build log (not the page)
* :mod:`rl2llm.provenance` — what a result depends on: the keys of the execution cache and of cached artifacts
"""

__version__ = "0.1.0"
