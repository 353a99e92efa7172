"""Independent numpy reference for DeepSeek-V3 (+MTP): checkpoint I/O, random
checkpoints, forward pass, greedy and speculative-decoding simulation."""
