#!/usr/bin/python3
"""Recalibrates fashion_bn_cnn's BatchNorm statistics on shifted images through
normserve_client and prints the accuracy before and after.

    cmake --build build --target normserve_python_client
    PYTHONPATH=build/python /usr/bin/python3 clients/python/examples/recalibrate_fashion.py \
        --token_file=/tmp/token [--shift=brightness] [--k=64]

against a server started with the training endpoint (README, "Statistics training
endpoint"). The shifted images are the recalibration experiment's
(scripts/fashion_recalibration_oracle.py: Fashion-MNIST from Debian's dataset-fashion-mnist).
"""
import argparse
import os
import sys

from normserve_client import Client, NormserveError

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../scripts"))
import fashion_recalibration_oracle as data  # noqa: E402

MODEL = "fashion_bn_cnn"


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--server", default="localhost:8001")
    p.add_argument("--training_server", default="localhost:8003")
    p.add_argument("--token_file", default=None, help="else NORMSERVE_TRAINING_TOKEN")
    p.add_argument("--shift", default="brightness", choices=data.SHIFTS)
    p.add_argument("--k", type=int, default=64, help="calibration images (batch-1 requests)")
    p.add_argument("--test_images", type=int, default=10000, help="first N of the test split")
    p.add_argument("--rollback", action="store_true", help="restore the old version at the end")
    args = p.parse_args()

    x_test, y_test = data.shifted_test_set(args.shift)
    x_test, y_test = x_test[:args.test_images], y_test[:args.test_images]
    calib = data.calibration_samples(args.shift, args.k)
    with Client(args.server, args.training_server, token_file=args.token_file) as client:
        before_version = client.metadata(MODEL).model_spec.version
        before = (client.predict_classes(MODEL, x_test) == y_test).mean()
        print(f"{args.shift}: accuracy {before:.4f} with version {before_version}")

        session = client.start_session(MODEL, min_values_per_channel=args.k,
                                       max_relative_sem=0.2)
        accepted, duplicates = session.accumulate_each(calib)
        report = session.report()
        print(f"session {session.id}: {accepted} images accumulated ({duplicates} duplicates), "
              f"quality gate {'passed' if report.gate_passed else 'failed'}")
        try:
            version = session.commit()
        except NormserveError as e:
            print(f"commit refused: {e}")
            session.abort()
            return 1
        after = (client.predict_classes(MODEL, x_test, version=version) == y_test).mean()
        print(f"{args.shift}: accuracy {after:.4f} with version {version} "
              f"(recalibrated on {args.k} images)")
        if args.rollback:
            print(f"rolled back: version {client.rollback(MODEL, before_version)} serves "
                  f"version {before_version}'s statistics")
    return 0


if __name__ == "__main__":
    sys.exit(main())
