"""Estimate the time of one MLSL round on a GPU from the network's measured multiply-adds.

The basis, printed with the figures: multiply-accumulates (MACs) of every convolution and dense
layer of the full-width network, counted by forward hooks on a real forward pass at a small input
and scaled by area (the network is fully convolutional at stride 8), times the number of network
evaluations one round needs (SISC: K patches plus the whole image, each with its flip; training:
forward + backward ~ 3x a forward), divided by an assumed sustained fraction of the GPU's peak
FP32 rate. It is an estimate, not a measurement: no GPU is available on our machines.

Usage: python tools/estimate_round_time.py [--gpu gtx1080|v100|a100] [--target-images 2975]
"""
import click
import mxnet as mx

from mlsl_gluon.model import MLSLNet, init_params

# Peak FP32 TFLOPS from the vendors' data sheets.
GPUS = {"gtx1080": 8.9, "v100": 15.7, "a100": 19.5, "rtx3090": 35.6}


def count_macs(net, size):
    """Multiply-accumulates of one forward of ``net`` on a (1, 3, size, size) input."""
    counts = {"total": 0}

    def hook(block, _inputs, out):
        out = out[0] if isinstance(out, (list, tuple)) else out
        weight = block.weight.shape
        spatial = out.shape[2] * out.shape[3] if out.ndim == 4 else 1
        per_output = 1
        for d in weight[1:]:
            per_output *= d
        counts["total"] += spatial * weight[0] * per_output

    def attach(block):
        for child in block._children.values():
            if isinstance(child, (mx.gluon.nn.Conv2D, mx.gluon.nn.Dense)):
                child.register_forward_hook(hook)
            attach(child)

    attach(net)
    net(mx.nd.zeros((1, 3, size, size)))
    return counts["total"]


@click.command()
@click.option("--gpu", type=click.Choice(sorted(GPUS)), default="gtx1080", show_default=True)
@click.option("--efficiency", default=0.5, show_default=True,
              help="Assumed sustained fraction of peak FP32 (cuDNN dilated convs, batch 1-2).")
@click.option("--target-images", default=2975, show_default=True,
              help="Cityscapes train images labelled per round.")
@click.option("--source-images", default=24966, show_default=True, help="GTA5 frames (6%% max per round).")
@click.option("--source-portion", default=0.06, show_default=True)
@click.option("--K", "k", default=50, show_default=True, help="SISC patches per image.")
@click.option("--patch", default=512, show_default=True)
@click.option("--crop", default=504, show_default=True)
@click.option("--epochs", default=2, show_default=True)
@click.option("--probe-size", default=128, show_default=True, help="Input side of the counting forward.")
def main(gpu, efficiency, target_images, source_images, source_portion, k, patch, crop, epochs, probe_size):
    seg = MLSLNet(num_classes=19, width=1.0, with_classifier=False)
    init_params(seg, [mx.cpu()])
    full = MLSLNet(num_classes=19, width=1.0, with_classifier=True)
    init_params(full, [mx.cpu()])
    area = lambda side: (side / probe_size) ** 2  # noqa: E731
    seg_macs = count_macs(seg, probe_size)
    full_macs = count_macs(full, probe_size)
    flops_per_s = GPUS[gpu] * 1e12 * efficiency
    patch_tflop = 2 * seg_macs * area(patch) / 1e12
    # SI on 1024x2048 is 8 patches' worth of pixels; every evaluation is done with its flip.
    label_tflop = 2 * (k + 8) * patch_tflop
    train_tflop = 3 * 2 * full_macs * area(crop) / 1e12
    train_images = epochs * (target_images + source_portion * source_images)
    label_h = target_images * label_tflop * 1e12 / flops_per_s / 3600
    train_h = train_images * train_tflop * 1e12 / flops_per_s / 3600
    print(f"segmentation forward, one {patch}x{patch} patch: {patch_tflop:.2f} TFLOP (measured MACs x2)")
    print(f"SISC labelling per image (K={k} + SI, with flips): {label_tflop:.1f} TFLOP")
    print(f"training per {crop}x{crop} image (fwd+bwd ~ 3x fwd, with PWL branch): {train_tflop:.2f} TFLOP")
    print(f"assumed sustained rate: {GPUS[gpu]} TFLOPS peak x {efficiency} on {gpu}")
    print(f"estimate per round: pseudo-labels {label_h:.1f} h for {target_images} images, "
          f"training {train_h:.1f} h for {train_images:.0f} image-steps, total {label_h + train_h:.1f} h")


if __name__ == "__main__":
    main()
