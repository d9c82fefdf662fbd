"""The two profiles of a run: ``released`` (the authors' released code, which produced the paper's
numbers; the default) and ``paper`` (the paper's text). SPEC section 9, docs/ARCHITECTURE.md
"Profiles" (the table with the released code's file:line for every row).

Each difference is a config field of its own whose default ``None`` means "from the profile";
:func:`resolve_profile` fills those fields once, when the config is loaded, so the resolved
config written into a run folder shows the values used, and a field given in a file, a
command option or ``--set`` beats the profile.
"""

PROFILES = ("released", "paper")
DEFAULT_PROFILE = "released"


def _ohem_released(method):
    # The released SISC command builds its network with bootstrapping=True (issegm/solve_ST1.py
    # L448); SISC+PWL (issegm1/solve_ST.py L552) and CBST (yzou2/CBST issegm/solve_ST.py L448)
    # with bootstrapping=False.
    return method == "sisc"


# "section.key" -> (released value, paper value); a callable takes experiment.method.
PROFILE_FIELDS = {
    "model.cls_head": ("released", "paper"),
    "model.cls_init": ("msra", "normal"),
    "train.loss_normalization": ("valid_pixels_per_device_batch", "per_image"),
    "train.lambda_cls": (0.04, 0.025),
    "train.ohem_released": (_ohem_released, False),
    "pseudo_label.K": (25, 50),
    "pseudo_label.threshold_sampling_released": (True, False),
    "pseudo_label.per_crop_weak_labels_released": (True, False),
    "data.hard_class_mining_released": (True, False),
}


class ProfileError(ValueError):
    """An unknown profile name."""


def profile_value(profile, name, method="sisc-pwl"):
    """The value profile ``profile`` gives field ``name`` (``'section.key'``) for ``method``."""
    if profile not in PROFILES:
        raise ProfileError(f"experiment.profile must be one of {PROFILES}, got {profile!r}")
    value = PROFILE_FIELDS[name][PROFILES.index(profile)]
    return value(method) if callable(value) else value


def field_value(config, name):
    """Field ``name`` of ``config``: its own value, or the profile's when it is None."""
    section, key = name.split(".")
    value = getattr(getattr(config, section), key)
    if value is None:
        value = profile_value(config.experiment.profile, name, config.experiment.method)
    return value


def resolve_profile(config):
    """Fill every profile field left None from ``config.experiment.profile`` (in place); returns config.

    A string field (the head, its initialisation, the loss averaging) has exactly the two
    profiles' values as its choices; anything else is a :class:`ProfileError` naming the field.
    """
    for name, values in PROFILE_FIELDS.items():
        section, key = name.split(".")
        value = field_value(config, name)
        if isinstance(values[0], str) and value not in values:
            raise ProfileError(f"{name} must be one of {values}, got {value!r}")
        setattr(getattr(config, section), key, value)
    return config
