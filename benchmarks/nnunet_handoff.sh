#!/usr/bin/env bash
# The nnU-Net hand-off end to end on a tiny synthetic dataset (five 40x40x36 volumes), on whatever device there is:
# nnU-Net plans and preprocesses it, the pretraining bundle pretrains the planned network with COVER, the check
# command compares the weights with the plans, and nnUNetv2_train trains one epoch (nnUNetTrainer_1epoch, fold 0)
# from them. Prints the wall time of each step and how many tensors nnU-Net loaded.
#   bash benchmarks/nnunet_handoff.sh [OUTPUT_FOLDER] [PRETRAIN_EPOCHS]     (needs the [nnunet] extra)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(realpath -m "${1:-runs/nnunet_handoff}")
epochs=${2:-4}
device=$(python -c "import torch; print('cuda' if torch.cuda.is_available() else 'cpu')")
# nnUNetv2_train imports every trainer module; the Primus ones import timm, which imports torchvision: a torchvision
# built for another torch (e.g. PyPI's CUDA build beside a CPU-only torch) stops it with "torchvision::nms does not
# exist". Say so before the long steps.
if ! python -c "import torchvision" > /dev/null 2>&1; then
    echo "torchvision does not import with torch $(python -c 'import torch; print(torch.__version__)'):" \
         "nnUNetv2_train needs the torchvision built for this torch (nnU-Net's timm imports it); install it first."
    exit 1
fi
rm -rf "$root" && mkdir -p "$root"
export nnUNet_raw=$root/raw nnUNet_preprocessed=$root/preprocessed nnUNet_results=$root/results
export nnUNet_n_proc_DA=${nnUNet_n_proc_DA:-1}
plans=$nnUNet_preprocessed/Dataset501_Tiny/nnUNetPlans.json

step() {  # step NAME LOGFILE COMMAND...: run, keep the output in LOGFILE, print the wall time
    local name=$1 log=$2 start=$SECONDS
    shift 2
    if ! "$@" > "$log" 2>&1; then tail -n 30 "$log"; echo "FAILED: $name (log: $log)"; exit 1; fi
    echo "$name: $((SECONDS - start)) s"
}

step "dataset (5 synthetic cases)" "$root/dataset.log" \
    python -m monai_cover.nnunet demo-dataset "$nnUNet_raw" --cases 5
step "nnUNetv2_plan_and_preprocess" "$root/plan.log" \
    nnUNetv2_plan_and_preprocess -d 501 -c 3d_fullres -np 1 -npfp 1
step "COVER pretraining ($epochs epochs, bundle)" "$root/pretrain.log" \
    python -m monai.bundle run \
    --config_file "['bundles/cover_pretrain_3d/configs/train.json','bundles/cover_pretrain_3d/configs/nnunet.json']" \
    --bundle_root bundles/cover_pretrain_3d --output_dir "$root/cover" --backbone nnunet \
    --nnunet_plans "$plans" --nnunet_configuration 3d_fullres --epochs "$epochs"
step "monai_cover.nnunet check" "$root/check.log" \
    python -m monai_cover.nnunet check "$root/cover/nnunet_pretrained.pth" "$plans" 3d_fullres
cat "$root/check.log"
step "nnUNetv2_train 1 epoch ($device)" "$root/train.log" \
    nnUNetv2_train 501 3d_fullres 0 -tr nnUNetTrainer_1epoch -device "$device" \
    -pretrained_weights "$root/cover/nnunet_pretrained.pth"
echo "nnU-Net loaded $(grep -cE '^(encoder|decoder)\..* shape torch.Size' "$root/train.log") tensors from" \
     "$root/cover/nnunet_pretrained.pth"
grep -E "train_loss|val_loss|Pseudo dice|Epoch time|Mean Validation Dice" "$root/train.log" | sed 's/^/  /'
