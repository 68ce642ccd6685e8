"""The VLM alignment wing: SPA-VL data, DPO, reward model, RL, harm evaluation."""
