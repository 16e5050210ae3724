"""The face-detection study family: SSH (Najibi et al., ICCV 2017) on a headless or full VGG-16."""
