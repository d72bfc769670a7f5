"""Distortions: the common corruptions (ImageNet-C / CIFAR-10-C style) and the perturbation
sequences (ImageNet-P / CIFAR-10-P style) that the robustness and perturbation suites evaluate.

One package owns them, from constants to cached sets:

| module | what it holds |
|---|---|
| `corruption_params` | the corruption parameter sets (cifar, tinyimagenet, imagenet) |
| `perturbation_schedules` | the perturbation schedules (frames and constants per schedule) |
| `corruption_reference`, `perturbation_reference` | the reference (numpy) engines |
| `corruption_torch`, `perturbation_torch`, `kernels/` | the torch engines and their kernels |
| `perturbation_ops` | geometric and blur primitives of the reference perturbation engine |
| `corruptions`, `perturbations` | sets: generated once per data seed and cached, or read from official files |
| `cache`, `jobs` | the on-disk set cache and the generation jobs that fill it |

"Engine" means only this: which generator (``reference`` or ``torch``) made a distortion.
"""
