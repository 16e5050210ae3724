"""Downstream evaluations: scored through the same tools the papers' readers use, so the numbers
here can be reproduced outside this harness."""
