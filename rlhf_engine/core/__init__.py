"""The sampling and training core that every method shares.

- ``models``: a model source (bundled, hub id, folder, .gguf) to a tokenizer and model; quantization, LoRA, device.
- ``generation``: left-padded sampling at temperature T, log-probs of logits / T, answers cut at the first EOS.
- ``rollout``: a step's sampled answers, scored and read back under the policy and the reference (``ScoredRollout``);
  the KL estimators; the one NaN/inf check.
- ``policy``: a run's policy, a LoRA adapter on a base whose reference is the base with adapters off.
- ``trainer``: ``PolicyTrainer``, which owns a step: rollout, advantages, the update loop (minibatches, the
  gradient in parts, one optimiser step each), metrics and checkpoints. A method supplies its loss.
- ``batched``: several runs trained side by side on one base model, their answers decoded as one batch.
- ``prompt_cache``: a prompt passed once for all its answers (scored by the reward model, read by the reference).
- ``reward``: the Bradley-Terry reward model (train, evaluate, score, save and load).
- ``heads``, ``lora_fused``, ``cpu_linear``, ``memory``, ``normalisation``, ``batching``, ``distributed``: the
  pieces under them (score and value heads, fused LoRA products, CPU matmul kernels, releasing memory, score
  normalisation, seeded batches, data parallelism).
"""
