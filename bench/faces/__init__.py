"""The face-detection study family: SSH (Najibi et al., ICCV 2017) on a headless or full VGG-16.

May import: the ground floor, `bench.util`, `bench.training`, `bench.evals` and `bench.data`;
never another family."""
