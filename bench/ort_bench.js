// ONNX Runtime (onnxruntime-node, CPU EP) peer of normserve_engine_bench: same ONNX file,
// batch 1, same thread budget; prints one JSON line in the shape format_table.py reads.
//
// Usage: node bench/ort_bench.js --model DIR/model.onnx [--name resnet18] [--threads 2]
//            [--seconds 10] [--warmup 10] [--min_iters 20] [--max_iters 100000]
'use strict';

const path = require('path');
const ort = require('onnxruntime-node');

function parseArgs(argv) {
  const args = {
    model: '', name: '', threads: 2, seconds: 10, warmup: 10, min_iters: 20, max_iters: 100000,
  };
  for (let i = 0; i < argv.length; i++) {
    let key = argv[i];
    let value;
    if (!key.startsWith('--')) throw new Error(`unexpected argument "${key}"`);
    key = key.slice(2);
    const eq = key.indexOf('=');
    if (eq >= 0) {
      value = key.slice(eq + 1);
      key = key.slice(0, eq);
    } else {
      value = argv[++i];
    }
    if (!(key in args)) throw new Error(`unknown flag --${key}`);
    if (value === undefined) throw new Error(`flag --${key} needs a value`);
    args[key] = typeof args[key] === 'number' ? Number(value) : value;
    if (Number.isNaN(args[key])) throw new Error(`flag --${key}: "${value}" is not a number`);
  }
  if (!args.model) throw new Error('--model is required');
  if (!args.name) args.name = path.basename(path.dirname(path.resolve(args.model)));
  return args;
}

// Linear interpolation between closest ranks (numpy's default); the C++ and Python
// runners use the same definition so the columns are comparable.
function quantile(sorted, q) {
  const pos = q * (sorted.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

// Deterministic uniform [-1, 1) data (mulberry32): no denormals, same every run.
function fillRandom(array, seed) {
  let a = seed >>> 0;
  for (let i = 0; i < array.length; i++) {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    array[i] = (((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1;
  }
}

function makeFeeds(session) {
  const feeds = {};
  session.inputMetadata.forEach((meta, index) => {
    if (meta.type !== 'float32') {
      throw new Error(`input "${meta.name}": type ${meta.type}, only float32 is supported`);
    }
    // Symbolic or unknown dims: the batch (first) is 1; any other must be static.
    const shape = meta.shape.map((d, axis) => {
      if (typeof d === 'number' && d >= 0) return d;
      if (axis === 0) return 1;
      throw new Error(`input "${meta.name}": dynamic dim ${axis} ("${d}") other than the batch`);
    });
    shape[0] = 1;
    const size = shape.reduce((x, y) => x * y, 1);
    const data = new Float32Array(size);
    fillRandom(data, 1234 + index);
    feeds[meta.name] = new ort.Tensor('float32', data, shape);
  });
  return feeds;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const session = await ort.InferenceSession.create(args.model, {
    executionProviders: ['cpu'],
    intraOpNumThreads: args.threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    logSeverityLevel: 3,
  });
  const feeds = makeFeeds(session);

  for (let i = 0; i < args.warmup; i++) await session.run(feeds);

  const budgetNs = BigInt(Math.round(args.seconds * 1e9));
  const start = process.hrtime.bigint();
  const times = [];
  while (times.length < args.max_iters) {
    const t0 = process.hrtime.bigint();
    await session.run(feeds);
    const t1 = process.hrtime.bigint();
    times.push(Number(t1 - t0) / 1e6);
    if (times.length >= args.min_iters && t1 - start >= budgetNs) break;
  }
  const sorted = times.slice().sort((x, y) => x - y);
  const mean = times.reduce((x, y) => x + y, 0) / times.length;
  const result = {
    runner: 'onnxruntime',
    model: args.name,
    median_ms: quantile(sorted, 0.5),
    p90_ms: quantile(sorted, 0.9),
    mean_ms: mean,
    min_ms: sorted[0],
    iters: times.length,
    threads: args.threads,
    version: ort.env.versions.node ?? ort.env.versions.common,
  };
  process.stdout.write(JSON.stringify(result) + '\n');
  await session.release();
}

main().catch((err) => {
  process.stderr.write(`ort_bench: ${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
