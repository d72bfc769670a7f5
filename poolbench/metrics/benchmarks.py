"""The benchmarks' names and reference numbers: corruptions, severities, perturbations, and
AlexNet's published ImageNet-C errors and ImageNet-P flip probabilities."""
from __future__ import annotations

BENCHMARK_CORRUPTIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
EXTRA_CORRUPTIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL_CORRUPTIONS: tuple[str, ...] = BENCHMARK_CORRUPTIONS + EXTRA_CORRUPTIONS
SEVERITIES: tuple[int, ...] = (1, 2, 3, 4, 5)

# AlexNet top-1 errors on the OFFICIAL ImageNet-C images, severities 1..5.
ALEXNET_ERR: dict[str, tuple[float, float, float, float, float]] = {
    "gaussian_noise": (0.69528, 0.82542, 0.93554, 0.98138, 0.99452),
    "shot_noise": (0.71224, 0.85108, 0.93574, 0.98182, 0.99146),
    "impulse_noise": (0.78374, 0.89808, 0.94870, 0.98720, 0.99548),
    "defocus_blur": (0.65624, 0.73202, 0.85036, 0.91364, 0.94714),
    "glass_blur": (0.64308, 0.75054, 0.88806, 0.91622, 0.93344),
    "motion_blur": (0.58430, 0.70048, 0.82108, 0.89750, 0.92638),
    "zoom_blur": (0.70008, 0.76992, 0.80784, 0.84198, 0.87198),
    "snow": (0.71726, 0.88392, 0.86468, 0.91870, 0.94952),
    "frost": (0.61390, 0.79734, 0.88790, 0.89942, 0.93430),
    "fog": (0.67474, 0.76050, 0.84378, 0.87260, 0.94500),
    "brightness": (0.45140, 0.48502, 0.54048, 0.62166, 0.72440),
    "contrast": (0.64548, 0.76150, 0.88874, 0.97760, 0.99270),
    "elastic_transform": (0.52596, 0.70116, 0.55686, 0.64076, 0.80554),
    "pixelate": (0.52218, 0.54620, 0.73728, 0.87092, 0.91262),
    "jpeg_compression": (0.51002, 0.54718, 0.57294, 0.65458, 0.74778),
    "speckle_noise": (0.66192, 0.74440, 0.90246, 0.94548, 0.97268),
    "gaussian_blur": (0.54732, 0.70444, 0.82574, 0.89864, 0.95940),
    "spatter": (0.47196, 0.62194, 0.75052, 0.84132, 0.90182),
    "saturate": (0.59342, 0.65514, 0.51174, 0.70834, 0.82260),
}
ALEXNET_CLEAN_ERR: float = 0.43478

P_TEST_PERTURBATIONS: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "motion_blur", "zoom_blur", "snow",
    "brightness", "translate", "rotate", "tilt", "scale",
)
# The CIFAR-P evaluation uses spatter in place of snow.
CIFAR_P_TEST_PERTURBATIONS: tuple[str, ...] = tuple(
    "spatter" if p == "snow" else p for p in P_TEST_PERTURBATIONS)
P_VALIDATION_PERTURBATIONS: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "shear")
ALL_PERTURBATIONS: tuple[str, ...] = P_TEST_PERTURBATIONS + P_VALIDATION_PERTURBATIONS
# Noise sequences compare every frame with the first (clean) frame.
NOISE_PERTURBATIONS: tuple[str, ...] = ("gaussian_noise", "shot_noise", "speckle_noise")

# AlexNet flip probabilities on the OFFICIAL ImageNet-P (test + validation perturbations).
ALEXNET_FP: dict[str, float] = {
    "gaussian_noise": 0.23653, "shot_noise": 0.30062, "motion_blur": 0.09297,
    "zoom_blur": 0.05942, "snow": 0.11928, "brightness": 0.04889, "translate": 0.11007,
    "rotate": 0.13104, "tilt": 0.07050, "scale": 0.23531,
    "speckle_noise": 0.18649, "gaussian_blur": 0.02775, "spatter": 0.05053, "shear": 0.10658,
}


def is_noise_perturbation(name: str) -> bool:
    """Whether FP/T5D compare every frame with the first frame (the authors test 'noise' in name)."""
    return "noise" in name
