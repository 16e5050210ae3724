"""What the tests share: data and suites they write (`textgen`, `store_suite`; `tiny_lm.yaml`, the
small LM suite the end-to-end tests extend), the toy family (`toy_family`, registered by the `toy`
fixture of tests/conftest.py), the real servers and tools some tests start (`debian_packages`,
`pg_server`, `browser`), the shared WIDER FACE ground truth (`shared_data`) and the official
MATLAB tool's WIDER evaluation (`wider_reference`), a DDP stage run under torchrun
(`ddp_stage`), and the run ids the suites resolve to (`suite_run_ids`)."""
