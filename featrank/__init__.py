"""featrank: which deep-feature space gives an image-quality score that follows image quality?

The library behind `python main.py` (and `python -m featrank`, and the `featrank` script). The
modules, in the order one image flows through them: degradation_generator, feature_extraction,
feature_cache, representations / feature_spaces, distribution_modeling, distance_metrics,
evaluation, report; pipeline runs them, cli turns flags into a run.

Entry points (imported when first used, so `import featrank` stays light):
    FeatureMetric        a ranked configuration as a metric in your own code (feature_metric)
    parse_spec           "efficientnet_lite0:11/concat/gap/fid" -> its configuration
    configuration_from   a results folder[#rank], its JSON or a spec -> the configuration
    UserConfig           a config.py's tables, read by path (UserConfig.load(path))
    run_experiment       the sweep of a mode (pipeline)
    build_caches         --build-cache as a call (pipeline)
    main                 the command line as a call: main(["--mode", "quick"])
"""
__version__ = "0.5.0"

# name -> the module that defines it
_EXPORTS = {
    "FeatureMetric": "feature_metric", "parse_spec": "metric_spec",
    "configuration_from": "metric_spec", "UserConfig": "user_config",
    "run_experiment": "pipeline", "build_caches": "pipeline", "main": "cli",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'featrank' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(f"featrank.{_EXPORTS[name]}"), name)
