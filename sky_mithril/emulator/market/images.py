"""The image versions the emulator offers, each in every region: one GPU
image (bids, reserved GPU instances) and one MCC (CPU) image (Kubernetes
control planes, CPU VMs)."""

from sky_mithril.emulator.market.records import InstanceType

IMAGE_VERSION_FID = 'imgv_emulator_ubuntu2204'
MCC_IMAGE_VERSION_FID = 'imgv_emulator_mcc_ubuntu2204'


def image_for(instance_type: InstanceType) -> str:
    """The image version instances of `instance_type` boot: the MCC image
    for a CPU type, the GPU image otherwise."""
    return MCC_IMAGE_VERSION_FID if instance_type.num_gpus == 0 else (
        IMAGE_VERSION_FID)
