"""Architecture claims: kernels, padding, downsampling, skips, dilation, multi-scale, SPP, separable
convolutions, attention, residuals, and which architecture for which data."""

from __future__ import annotations

from dltricks.search.evidence.claim import Anchor, Claim, Setting, arm

# The evidence-sized tasks: MNIST-1D (3000 signals, 8 epochs) and 2D shapes (200 images of 32x32, 20 epochs:
# fewer leave the small lesion class unlearnt, and every variant then fails alike).
MNIST1D = {"data.num_samples": 3000, "train.epochs": 8}
MNIST1D_QUICK = {"data.num_samples": 400, "train.epochs": 1}
SEG2D = {"data.num_train": 200, "data.num_test": 60, "data.size": 32, "train.epochs": 20}
SEG2D_QUICK = {"data.num_train": 24, "data.num_test": 8, "data.size": 16, "train.epochs": 1,
               "model.channels": [8, 16]}
CNN_TASK = "MNIST-1D (3000 signals), 1D CNN 32-64-128, 8 epochs"
SEG_TASK = "2D shapes (200 images, 32x32), U-Net 16-32-64, 20 epochs"

VGG = "Simonyan & Zisserman 2015, VGG (arXiv:1409.1556)"

CLAIMS = [
    Claim("stack_3x3_cost", "architecture", "", "digits-cnn", ("stack_3x3",), "params", kind="cost",
          task="2D CNN on 8x8 digits with 7x7 kernels", overrides={"model.kernel_size": 7},
          baseline="one 7x7 conv per unit",
          # the stem (1 -> C channels) is where a stack costs more: the paper's C -> C case is the deeper net
          settings=(Setting("widths 32-64", {}), Setting("widths 64-64-64", {"model.channels": [64, 64, 64]})),
          anchor=Anchor(VGG + ", sec. 2.3", "three 3x3 layers: 27C² weights against 49C² for one 7x7 (-45%)", "lower"),
          also=(("receptive_field", Anchor(VGG + ", sec. 2.3", "the same 7x7 effective receptive field", "same")),
                ("flops", Anchor(VGG + ", sec. 2.3", "fewer multiply-adds, as fewer weights", "lower")))),
    Claim("stack_3x3_cost_1d", "architecture", "", "mnist1d-cnn", ("stack_3x3",), "params", kind="cost",
          task="1D CNN 32-64-128 with 7-wide kernels", overrides={"model.kernel_size": 7},
          baseline="one 7-wide conv per unit",
          anchor=Anchor("arithmetic (the tip holds in 2D and 3D)", "in 1D three 3-wide layers hold 9C² weights "
                        "against 7C² for one 7-wide conv: more, not fewer", "higher"),
          also=(("receptive_field", Anchor("arithmetic", "the same 7-wide receptive field", "same")),)),
    Claim("stack_3x3", "architecture", "", "mnist1d-cnn", ("stack_3x3",), "test_accuracy", task=CNN_TASK + ", k = 7",
          overrides={**MNIST1D, "model.kernel_size": 7}, quick=MNIST1D_QUICK, baseline="7-wide conv",
          anchor=Anchor(VGG + ", sec. 4.1", "a net with one 5x5 conv in place of each pair of 3x3 had 7% higher "
                        "top-1 error on ImageNet", "helps")),
    Claim("same_padding", "architecture",
          "Convolutions without padding shrink every map and the edge positions reach fewer outputs: pad to 'same'.",
          "mnist1d-cnn", (arm("same_padding", {"model.padding": "same"}, {"model.padding": "valid"}),),
          "test_accuracy", task=CNN_TASK, overrides=MNIST1D, quick=MNIST1D_QUICK, baseline="valid padding",
          anchor=Anchor("Alsallakh et al. 2021, Mind the Pad (ICLR)", "zero 'same' padding keeps border "
                        "information that valid convolutions discard; no single accuracy figure", "helps")),
    Claim("padding_edges", "architecture", "", "seg2d-unet", ("reflect_padding",), "test_edge_dice", task=SEG_TASK,
          overrides=SEG2D, quick=SEG2D_QUICK, baseline="zero padding",
          anchor=Anchor("Liu et al. 2018, Partial Convolution based Padding (arXiv:1811.11718)", "zero padding's "
                        "artefacts cost accuracy near the border; padding that ignores the frame recovered it in "
                        "segmentation", "helps"),
          also=(("test_dice", Anchor("Liu et al. 2018", "better segmentation over the whole image too", "helps")),)),
    Claim("strided_conv", "architecture", "", "mnist1d-cnn", ("strided_conv",), "test_accuracy", task=CNN_TASK,
          overrides=MNIST1D, quick=MNIST1D_QUICK, baseline="max pooling",
          anchor=Anchor("Springenberg et al. 2015, Striving for Simplicity (arXiv:1412.6806), Table 3",
                        "CIFAR-10: strided convolutions in place of max-pooling lost no accuracy", "equivalent")),
    Claim("skip_connections", "architecture", "", "seg2d-unet", ("skip_connections",), "test_dice", task=SEG_TASK,
          overrides={**SEG2D, "model.skip_connections": False}, quick=SEG2D_QUICK, baseline="encoder-decoder",
          anchor=Anchor("Drozdzal et al. 2016, The Importance of Skip Connections in Biomedical Image Segmentation "
                        "(arXiv:1608.04117)", "long skips raised Dice on EM segmentation; U-Net's design", "helps")),
    Claim("dilation_segmentation", "architecture", "", "seg2d-unet", ("dilated_bottleneck",), "test_dice",
          task=SEG_TASK, overrides=SEG2D, quick=SEG2D_QUICK, baseline="plain bottleneck",
          anchor=Anchor("Yu & Koltun 2016, Multi-Scale Context Aggregation by Dilated Convolutions "
                        "(arXiv:1511.07122), Table 3", "a dilated context module raised Pascal VOC mean IoU over "
                        "the front end alone", "helps")),
    Claim("dual_pathway", "architecture", "", "seg2d-unet", ("dual_pathway",), "test_dice", task=SEG_TASK,
          overrides=SEG2D, quick=SEG2D_QUICK, baseline="single pathway",
          anchor=Anchor("Kamnitsas et al. 2017, DeepMedic (Medical Image Analysis 36)", "the multi-scale dual "
                        "pathway raised Dice over the single pathway on brain-injury lesions", "helps")),
    Claim("spp", "architecture", "", "mnist1d-cnn", ("spp",), "test_accuracy", task=CNN_TASK, overrides=MNIST1D,
          quick=MNIST1D_QUICK, baseline="global average pooling",
          anchor=Anchor("He et al. 2014, Spatial Pyramid Pooling (arXiv:1406.4729), Table 2", "SPP lowered ImageNet "
                        "top-1 error of each of four networks", "helps")),
    Claim("separable_cost", "architecture", "", "mnist1d-cnn", ("separable",), "params", kind="cost",
          task="1D CNN 32-64-128", baseline="full convolutions",
          anchor=Anchor("Howard et al. 2017, MobileNets (arXiv:1704.04861), Table 4", "29.3M → 4.2M parameters "
                        "(×0.14) for the same network", "lower"),
          also=(("flops", Anchor("Howard et al. 2017, MobileNets, Table 4", "4866M → 569M mult-adds", "lower")),)),
    Claim("separable", "architecture", "", "mnist1d-cnn", ("separable",), "test_accuracy", task=CNN_TASK,
          overrides=MNIST1D, quick=MNIST1D_QUICK, baseline="full convolutions",
          anchor=Anchor("Howard et al. 2017, MobileNets, Table 4", "ImageNet top-1 71.7% → 70.6%: a point lost for "
                        "7x fewer parameters", "hurts")),
    Claim("squeeze_excitation", "architecture", "", "mnist1d-cnn", ("se",), "test_accuracy", task=CNN_TASK,
          overrides=MNIST1D, quick=MNIST1D_QUICK, baseline="plain units",
          anchor=Anchor("Hu et al. 2018, Squeeze-and-Excitation Networks (arXiv:1709.01507), Table 2",
                        "ResNet-50 ImageNet top-1 error 24.80% → 23.29%", "helps")),
    Claim("self_attention", "architecture", "", "mnist1d-cnn", ("self_attention",), "test_accuracy", task=CNN_TASK,
          overrides=MNIST1D, quick=MNIST1D_QUICK, baseline="no attention",
          anchor=Anchor("Bello et al. 2019, Attention Augmented Convolutional Networks (arXiv:1904.09925)",
                        "ResNet-50 ImageNet top-1 +1.3 points with attention", "helps")),
    Claim("residual_deep", "architecture",
          "A shortcut around each unit lets a deep net train: the plain one of the same depth trains worse.",
          "mnist1d-cnn", ("residual",), "test_accuracy", task="MNIST-1D (3000 signals), 1D CNN of 24 conv units "
          "(8 per stage), batch norm, 8 epochs", overrides={**MNIST1D, "model.blocks_per_stage": 8},
          quick={**MNIST1D_QUICK, "model.blocks_per_stage": 2}, baseline="plain",
          anchor=Anchor("He et al. 2016, Deep Residual Learning (arXiv:1512.03385), Table 2",
                        "ImageNet top-1 error: plain-34 28.54% against ResNet-34 25.03%", "helps")),
]

# Architecture choice per data type: whole other models on MNIST-1D, each with its bundled recipe's settings.
_MLP = {"name": "mlp", "hidden": [512, 512], "dropout": 0.5}
_MODELS = {
    "cnn": {"name": "cnn", "channels": [32, 64, 128], "kernel_size": 3, "downsample": "max", "norm": "batch",
            "head": "avg"},
    "gru": {"name": "rnn", "cell": "gru", "hidden": 128, "bidirectional": True},
    "transformer": {"name": "transformer", "patch_size": 5, "d_model": 96, "heads": 4, "num_layers": 3,
                    "dim_feedforward": 192, "dropout": 0.1},
}
_GRU_LR = {"train.lr": 1e-2, "train.grad_clip": 1.0}
_TRANSFORMER_LR = {"train.lr": 1e-3, "train.grad_clip": 1.0}
GREYDANUS = "Greydanus 2020, Scaling down Deep Learning (MNIST-1D, arXiv:2011.14439), Table 1"
CLAIMS.append(Claim(
    "architecture_choice", "architecture",
    "Pick the architecture for the data type: a convolution for signals whose pattern can sit anywhere, "
    "a recurrent or attention model for sequences, an MLP only as the baseline.",
    "mnist1d-mlp",
    (arm("cnn", {"model": _MODELS["cnn"], "train.lr": 3e-3, "train.grad_clip": 0.0},
         {"model": _MLP, "train.lr": 3e-3, "train.grad_clip": 0.0}),
     arm("gru", {"model": _MODELS["gru"], **_GRU_LR}, {"model": _MLP, "train.lr": 3e-3, "train.grad_clip": 0.0}),
     arm("transformer", {"model": _MODELS["transformer"], **_TRANSFORMER_LR},
         {"model": _MLP, "train.lr": 3e-3, "train.grad_clip": 0.0})),
    "test_accuracy", task="MNIST-1D (5000 signals), 20 epochs each, cosine schedule",
    overrides={"train.epochs": 20, "train.weight_decay": 0.0}, quick=MNIST1D_QUICK, baseline="MLP 512-512",
    anchor=Anchor(GREYDANUS, "test accuracy: MLP 68%, CNN 94%, GRU 91%", "helps"), max_seeds=6))
