"""PPO expert on proprioceptive dm_control states, CleanRL style, with the paper's experts' settings. Writes
`config.pt` and `checkpoint.pt` (released keys) into `checkpoint_path`, as `experts.load_expert` loads them.

    python -m scripts.data_collection.cleanrl_ppo --domain=walker --task=run --total_timesteps=2048 --num_envs=4
"""

import dataclasses
import os
import time
from dataclasses import dataclass
from typing import Optional

import gymnasium as gym
import numpy as np
import pyrallis
import torch
import torch.nn as nn
from torch.distributions.normal import Normal

from scripts.data_collection.experts import PPO_CHECKPOINT_NAME, PPO_CONFIG_NAME, DMCStateEnv, RunningMeanStd, mlp
from src.checkpoint import save_checkpoint, set_seed

REWARD_CLIP = 10.0  # normalised rewards are clipped to +-REWARD_CLIP


@dataclass
class Config:
    project: str = "lapo"  # wandb project (only with track=True)
    group: str = "ppo-collection"  # wandb group
    track: bool = False  # log to wandb
    domain: str = "cheetah"  # dm_control domain
    task: str = "run"  # dm_control task
    hidden_dim: int = 512  # width of the two hidden layers of actor and critic
    total_timesteps: int = 1_000_000_000  # environment transitions, all envs together
    learning_rate: float = 3e-4  # Adam learning rate
    num_envs: int = 64  # parallel environments
    num_steps: int = 128  # steps per environment per rollout
    anneal_lr: bool = False  # linearly anneal the learning rate to 0
    gamma: float = 0.99  # discount
    gae_lambda: float = 0.95  # GAE lambda
    num_minibatches: int = 16  # minibatches per epoch
    update_epochs: int = 1  # epochs over each rollout (the released experts' config)
    norm_adv: bool = True  # normalise advantages per minibatch
    clip_coef: float = 0.2  # PPO ratio clipping
    ent_coef: float = 0.0  # entropy bonus
    vf_coef: float = 0.5  # value loss weight
    max_grad_norm: float = 0.5  # gradient norm clipping
    target_kl: Optional[float] = None  # stop the epoch loop early above this approximate KL
    checkpoint_every: int = 1  # write the checkpoint every this many iterations (and at the end)
    checkpoint_path: Optional[str] = None  # output folder; default checkpoints/<domain>-<task>-expert
    seed: int = 1  # seed of envs, torch and numpy
    cuda: bool = True  # use CUDA when available


class Agent(nn.Module):
    """Gaussian policy with state-independent log-std, value critic and the observation statistics."""

    def __init__(self, obs_dim: int, action_dim: int, hidden_dim: int):
        super().__init__()
        self.obs_rms = RunningMeanStd((obs_dim,))
        self.critic = mlp(obs_dim, hidden_dim, 1)
        self.actor_mean = mlp(obs_dim, hidden_dim, action_dim)
        self.actor_logstd = nn.Parameter(torch.zeros(1, action_dim))
        for net, out_std in ((self.critic, 1.0), (self.actor_mean, 0.01)):
            for layer, std in zip(net[::2], (np.sqrt(2), np.sqrt(2), out_std), strict=True):
                nn.init.orthogonal_(layer.weight, std)
                nn.init.zeros_(layer.bias)

    def get_action_and_value(self, norm_obs: torch.Tensor, action: torch.Tensor | None = None):
        mean = self.actor_mean(norm_obs)  # [B, A]
        dist = Normal(mean, self.actor_logstd.expand_as(mean).exp())
        if action is None:
            action = dist.sample()
        return action, dist.log_prob(action).sum(1), dist.entropy().sum(1), self.critic(norm_obs)


def train(config: Config) -> None:
    if config.checkpoint_path is None:
        config.checkpoint_path = os.path.join("checkpoints", f"{config.domain}-{config.task}-expert")
    batch_size = config.num_envs * config.num_steps
    minibatch_size = batch_size // config.num_minibatches
    num_iterations = max(1, config.total_timesteps // batch_size)
    if config.track:
        import wandb

        wandb.init(project=config.project, group=config.group, config=dataclasses.asdict(config))

    set_seed(config.seed)
    device = torch.device("cuda" if config.cuda and torch.cuda.is_available() else "cpu")

    # finished episodes reset in the same step (the final obs is not needed: no bootstrapping)
    fns = [lambda: DMCStateEnv(config.domain, config.task)] * config.num_envs
    envs = gym.vector.SyncVectorEnv(fns, autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    obs_dim, action_dim = envs.single_observation_space.shape[0], envs.single_action_space.shape[0]
    agent = Agent(obs_dim, action_dim, config.hidden_dim).to(device)
    optimizer = torch.optim.Adam(agent.parameters(), lr=config.learning_rate, eps=1e-5)

    shape = (config.num_steps, config.num_envs)
    obs_buf = torch.zeros((*shape, obs_dim), device=device)  # normalised states
    actions_buf = torch.zeros((*shape, action_dim), device=device)
    logprobs_buf, rewards_buf, dones_buf, values_buf = (torch.zeros(shape, device=device) for _ in range(4))

    # Reward scaling (CleanRL's NormalizeReward): divide by the running std of the discounted return.
    disc_return = np.zeros(config.num_envs)
    return_mean, return_var, return_count = 0.0, 1.0, 1e-4
    episode_return, finished_returns = np.zeros(config.num_envs), []

    global_step, start_time = 0, time.time()
    raw_obs, _ = envs.reset(seed=config.seed)
    next_obs = torch.as_tensor(raw_obs, dtype=torch.float32, device=device)
    agent.obs_rms.update(next_obs)
    next_obs = agent.obs_rms(next_obs)
    next_done = torch.zeros(config.num_envs, device=device)

    for iteration in range(1, num_iterations + 1):
        if config.anneal_lr:
            optimizer.param_groups[0]["lr"] = (1.0 - (iteration - 1.0) / num_iterations) * config.learning_rate

        # Rollout: num_steps x num_envs transitions with the stochastic policy.
        for step in range(config.num_steps):
            global_step += config.num_envs
            obs_buf[step], dones_buf[step] = next_obs, next_done
            with torch.no_grad():
                action, logprob, _, value = agent.get_action_and_value(next_obs)
            values_buf[step], actions_buf[step], logprobs_buf[step] = value.flatten(), action, logprob

            raw_obs, reward, terminated, truncated, _ = envs.step(action.cpu().numpy().clip(-1.0, 1.0))
            done = np.logical_or(terminated, truncated)
            episode_return += reward
            finished_returns.extend(episode_return[done].tolist())
            episode_return[done] = 0.0

            disc_return = disc_return * config.gamma + reward
            batch_mean, batch_var, n = disc_return.mean(), disc_return.var(), len(disc_return)
            delta, total = batch_mean - return_mean, return_count + n
            return_var = (return_var * return_count + batch_var * n + delta**2 * return_count * n / total) / total
            return_mean, return_count = return_mean + delta * n / total, total
            scaled_reward = np.clip(reward / np.sqrt(return_var + 1e-8), -REWARD_CLIP, REWARD_CLIP)
            disc_return[done] = 0.0

            rewards_buf[step] = torch.as_tensor(scaled_reward, dtype=torch.float32, device=device)
            next_obs = torch.as_tensor(raw_obs, dtype=torch.float32, device=device)
            agent.obs_rms.update(next_obs)
            next_obs = agent.obs_rms(next_obs)
            next_done = torch.as_tensor(done, dtype=torch.float32, device=device)

        # Generalised advantage estimation (episode ends are treated as terminal, as in CleanRL).
        with torch.no_grad():
            next_value = agent.critic(next_obs).flatten()
            advantages = torch.zeros_like(rewards_buf)
            last_gae = 0
            for t in reversed(range(config.num_steps)):
                next_nonterminal = 1.0 - (next_done if t == config.num_steps - 1 else dones_buf[t + 1])
                next_values = next_value if t == config.num_steps - 1 else values_buf[t + 1]
                delta = rewards_buf[t] + config.gamma * next_values * next_nonterminal - values_buf[t]
                last_gae = delta + config.gamma * config.gae_lambda * next_nonterminal * last_gae
                advantages[t] = last_gae
            returns = advantages + values_buf

        b_obs, b_actions = obs_buf.reshape(-1, obs_dim), actions_buf.reshape(-1, action_dim)
        b_logprobs, b_advantages = logprobs_buf.reshape(-1), advantages.reshape(-1)
        b_returns, b_values = returns.reshape(-1), values_buf.reshape(-1)

        # Clipped-surrogate policy update and value regression.
        clipfracs = []
        for _epoch in range(config.update_epochs):
            b_inds = np.random.permutation(batch_size)
            for start in range(0, batch_size, minibatch_size):
                mb = b_inds[start : start + minibatch_size]
                _, new_logprob, entropy, new_value = agent.get_action_and_value(b_obs[mb], b_actions[mb])
                log_ratio = new_logprob - b_logprobs[mb]
                ratio = log_ratio.exp()
                with torch.no_grad():
                    approx_kl = ((ratio - 1) - log_ratio).mean()
                    clipfracs.append(((ratio - 1.0).abs() > config.clip_coef).float().mean().item())
                mb_adv = b_advantages[mb]
                if config.norm_adv:
                    mb_adv = (mb_adv - mb_adv.mean()) / (mb_adv.std() + 1e-8)
                pg_loss = torch.max(
                    -mb_adv * ratio, -mb_adv * ratio.clamp(1 - config.clip_coef, 1 + config.clip_coef)
                ).mean()
                v_loss = 0.5 * (new_value.flatten() - b_returns[mb]).square().mean()
                loss = pg_loss - config.ent_coef * entropy.mean() + config.vf_coef * v_loss
                optimizer.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(agent.parameters(), config.max_grad_norm)
                optimizer.step()
            if config.target_kl is not None and approx_kl > config.target_kl:
                break

        sps = int(global_step / (time.time() - start_time))
        mean_return = float(np.mean(finished_returns)) if finished_returns else float("nan")
        print(f"iter {iteration}/{num_iterations} step {global_step} sps {sps} episode_return {mean_return:.1f}")
        if config.track:
            explained_var = 1 - (b_returns - b_values).var() / b_returns.var()
            charts = {"episodic_return": mean_return, "learning_rate": optimizer.param_groups[0]["lr"], "SPS": sps}
            losses = {"value_loss": v_loss.item(), "policy_loss": pg_loss.item(), "entropy": entropy.mean().item()}
            losses |= {"approx_kl": approx_kl.item(), "clipfrac": float(np.mean(clipfracs))}
            losses |= {"explained_variance": explained_var.item()}
            logged = {f"charts/{k}": v for k, v in charts.items()} | {f"losses/{k}": v for k, v in losses.items()}
            wandb.log(logged, step=global_step)
        finished_returns = []
        if iteration % config.checkpoint_every == 0 or iteration == num_iterations:  # each file written atomically
            save_checkpoint(os.path.join(config.checkpoint_path, PPO_CONFIG_NAME), dataclasses.asdict(config))
            state_dict = {k: v.detach().cpu() for k, v in agent.state_dict().items()}
            save_checkpoint(os.path.join(config.checkpoint_path, PPO_CHECKPOINT_NAME), state_dict)

    envs.close()
    print(f"Saved {config.checkpoint_path}")


if __name__ == "__main__":
    train(pyrallis.parse(config_class=Config))
