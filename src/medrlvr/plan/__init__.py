"""Memory plan of a PPO run per GPU and phase (``python -m medrlvr.plan``): model states from DeepSpeed's ZeRO
estimators, activations from a meta-device skeleton, the vocabulary projection and the rollout engine's share."""
