#!/usr/bin/env bash
# validation sweep for issue 21, run on the lent H200 at commit aff5913 (defaults then: MDM cpu 1000
# iterations; Huginn 800 iterations, --mislabel 0.6): from the repository root,
# OUT=DIR bash results/h200_validation/sweep2.sh 285   (285 s: the limit before it stops the runs)
set -u
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
nvidia-cuda-mps-control -d && echo "mps on" || echo "mps off"
python -c "import torch;print(torch.__version__, torch.cuda.get_device_name())"
mkdir -p runs/g; rm -rf runs/g/*
run() { name=$1; shift; ( t0=$SECONDS; "$@" --validation --device cuda --out runs/g/$name > runs/g/$name.log 2>&1; echo "$name rc $? wall $((SECONDS-t0)) s" >> runs/g/$name.log ) & }
for s in 0 1; do for m in 0.8 0.9; do
  run hug_s${s}_n1200_mis$m python train_huginn.py --seed $s --steps 1200 --mislabel $m
done; done
run hug_s2_n1200_mis0.8 python train_huginn.py --seed 2 --steps 1200 --mislabel 0.8
run ar_s0_L16_B8 python train_lm.py --model ar --seed 0 --layers 16 --blocks 8
sleep 5; nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv
( sleep ${1:-480}; echo "time up"; pkill -f train_ ) &
killer=$!
wait_all() { while pgrep -f "train_(lm|huginn)" > /dev/null; do sleep 5; done; }
wait_all; kill $killer 2>/dev/null
cd runs/g && find . \( -name '*.json' -o -name '*.log' -o -name '*.txt' -o -name '*.jsonl' \) -print0 | tar czf $OUT/sweep.tgz --null -T -
grep -h " rc " *.log
