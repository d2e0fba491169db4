#!/usr/bin/env bash
# The validation sweep of issue 21 on the lent H200, at commit aff5913 (defaults then: MDM cpu 1000
# iterations; Huginn 800 iterations and --mislabel 0.6). Two calls, from the repository root:
#   OUT=DIR bash results/h200_validation/sweep.sh 1 430    # 430 s: the limit before runs are stopped
#   OUT=DIR bash results/h200_validation/sweep.sh 2 285
# (each call ran a copy holding only its own part; merged here). Every run is one process, all at
# once on the one GPU under MPS; metrics, curves and logs go to $OUT/sweep.tgz.
set -u
export OMP_NUM_THREADS=1 PYTHONUNBUFFERED=1
nvidia-cuda-mps-control -d && echo "mps on" || echo "mps off"
python -c "import torch;print(torch.__version__, torch.cuda.get_device_name())"
mkdir -p runs/g; rm -rf runs/g/*
run() {  # name, command: the command on the validation text, on CUDA, into runs/g/name
  name=$1; shift
  ( t0=$SECONDS; "$@" --validation --device cuda --out runs/g/$name > runs/g/$name.log 2>&1
    echo "$name rc $? wall $((SECONDS-t0)) s" >> runs/g/$name.log ) &
}
if [ "$1" = 1 ]; then
  for s in 0 1 2; do for n in 1000 2000 3000; do
    run mdm_s${s}_n${n} python train_lm.py --model mdm --seed $s --steps $n
  done; done
  run mdm_s1_n2000_lr1e-3 python train_lm.py --model mdm --seed 1 --steps 2000 --lr 1e-3
  run hug_s0_base python train_huginn.py --seed 0
  run hug_s0_n1200 python train_huginn.py --seed 0 --steps 1200
  run hug_s0_n1600 python train_huginn.py --seed 0 --steps 1600
  run hug_s0_w96 python train_huginn.py --seed 0 --width 96
  run hug_s0_mis0.8 python train_huginn.py --seed 0 --mislabel 0.8
  run hug_s1_base python train_huginn.py --seed 1
  run hug_s1_mis0.8 python train_huginn.py --seed 1 --mislabel 0.8
  run ar_s0_base python train_lm.py --model ar --seed 0
  run ar_s0_last python train_lm.py --model ar --seed 0 --readout last
  run ar_s0_L12 python train_lm.py --model ar --seed 0 --layers 12
  run ar_s0_L16 python train_lm.py --model ar --seed 0 --layers 16
  run ar_s0_w96 python train_lm.py --model ar --seed 0 --width 96
else
  for s in 0 1; do for m in 0.8 0.9; do
    run hug_s${s}_n1200_mis$m python train_huginn.py --seed $s --steps 1200 --mislabel $m
  done; done
  run hug_s2_n1200_mis0.8 python train_huginn.py --seed 2 --steps 1200 --mislabel 0.8
  run ar_s0_L16_B8 python train_lm.py --model ar --seed 0 --layers 16 --blocks 8
fi
( sleep $2; echo "time up"; pkill -f train_ ) &
killer=$!
while pgrep -f "train_(lm|huginn)" > /dev/null; do sleep 5; done
kill $killer 2>/dev/null
cd runs/g && find . \( -name '*.json' -o -name '*.log' -o -name '*.txt' -o -name '*.jsonl' \) -print0 |
  tar czf $OUT/sweep.tgz --null -T -
grep -h " rc " *.log
