#!/usr/bin/env python3
"""Reads a run's TensorBoard event files with TensorBoard's own readers and prints the scalars.

Usage: read_tensorboard.py DIR. Prints one JSON object:
  "files":       the event files of DIR;
  "versions":    every file_version event read (one per file: "brain.Event:2");
  "scalars":     {tag: [[step, value], ...]}: every simple_value of every event of every file,
                 in the order written, by the raw loader (which checks each record's CRCs), so
                 stale files or duplicated steps show up;
  "accumulator": {tag: [[step, value], ...]}: what TensorBoard's EventAccumulator (the loader
                 behind its scalar dashboard) makes of the directory.
Exits 1 when a file holds bytes that are no whole, checksummed record (the raw loader stops
there silently), and 2 when the tensorboard package is missing (`pip install tensorboard`).
"""

import json
import os
import sys

try:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto import event_pb2
except ImportError as e:
    print(f"the tensorboard Python package is missing ({e}): pip install tensorboard",
          file=sys.stderr)
    sys.exit(2)

# A TFRecord's framing around its data: length (8), its CRC (4), the data's CRC (4).
FRAMING = 16


def read_raw(directory, files):
    scalars, versions = {}, []
    for name in files:
        path = os.path.join(directory, name)
        read = 0
        for raw in RawEventFileLoader(path).Load():
            read += len(raw) + FRAMING
            event = event_pb2.Event.FromString(raw)
            if event.HasField("file_version"):
                versions.append(event.file_version)
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, []).append([event.step, value.simple_value])
        size = os.path.getsize(path)
        if read != size:
            print(f"{path}: only {read} of {size} bytes are whole records with good checksums",
                  file=sys.stderr)
            sys.exit(1)
    return scalars, versions


def read_accumulated(directory):
    accumulator = EventAccumulator(directory)
    accumulator.Reload()
    return {
        tag: [[e.step, e.value] for e in accumulator.Scalars(tag)]
        for tag in accumulator.Tags()["scalars"]
    }


def main():
    directory = sys.argv[1]
    files = sorted(f for f in os.listdir(directory) if "tfevents" in f)
    scalars, versions = read_raw(directory, files)
    print(json.dumps({
        "files": files,
        "versions": versions,
        "scalars": scalars,
        "accumulator": read_accumulated(directory),
    }))


if __name__ == "__main__":
    main()
