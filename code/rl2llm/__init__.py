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
* :mod:`rl2llm.ppo` — PPO with switches for each implementation detail, discrete and Gaussian policies (Lecture 6)
* :mod:`rl2llm.vector` — vector environments timed (sync, async, vectorised), runs in worker processes (Lecture 6)
* :mod:`rl2llm.offpolicy` — DDPG, TD3 and SAC in one loop (Lecture 7)
* :mod:`rl2llm.model_based` — Dyna-Q, learned dynamics models, MPC by random shooting and CEM (Lecture 8)
* :mod:`rl2llm.attention` — scaled dot-product, multi-head and grouped-query attention, positional encodings (Lecture 9)
* :mod:`rl2llm.transformer` — a small GPT written to be read, converters to transformers' GPT-2 and Llama (Lecture 10)
* :mod:`rl2llm.tokenizer` — byte-level BPE, naive and incremental, and its Hugging Face twin (Lecture 11)
* :mod:`rl2llm.lm` — language-model training, perplexity, decoding filters, power-law fits (Lecture 12)
* :mod:`rl2llm.corpora` — generated stories, arithmetic and code tasks with their checks (Parts III and IV)
* :mod:`rl2llm.zoo` — the book's small pretrained language models, trained once and cached (Parts III and IV)
* :mod:`rl2llm.sequences` — prompts and completions as token batches: encode, sample with the drawn ids, log-probabilities (Part IV)
* :mod:`rl2llm.preferences` — the hidden gold judge, its Bradley–Terry noise, comparisons of a model's answers (Part IV)
* :mod:`rl2llm.reward_model` — Bradley–Terry and Plackett–Luce reward models, calibration, ensembles, best-of-n (Lecture 13)
* :mod:`rl2llm.rlhf` — PPO for language models: per-token KL estimators, shaped rewards, value head, adaptive KL (Lecture 14)
* :mod:`rl2llm.dpo` — DPO, IPO and hinge losses, the closed-form optimum, preference training, LoRA (Lecture 15)
* :mod:`rl2llm.offline` — KTO, SimPO, ORPO and CPO losses (Lecture 16)
* :mod:`rl2llm.grpo` — GRPO, Dr. GRPO and RLOO: group advantages and the clipped loss (Lecture 16)
* :mod:`rl2llm.sandbox` — unit tests of generated code in a limited subprocess (Lecture 16)
* :mod:`rl2llm.exercises` — checkers for the exercises a reader solves in code
* :mod:`rl2llm.plotting` — the book's figure style and shared plots
* :mod:`rl2llm.seeding` — the one seeding helper
* :mod:`rl2llm.progress` — progress of long loops, for the build log (not the page)
* :mod:`rl2llm.provenance` — what a result depends on: the keys of the execution cache and of cached artifacts
"""

__version__ = "0.1.0"
