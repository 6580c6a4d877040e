// Runs an ONNX file in ONNX Runtime (onnxruntime-node, CPU EP, all graph optimizations,
// so a QDQ file runs ORT's int8 kernels) on float32 inputs and writes its first output:
// the oracle the int8 tests compare normserve's QDQ export with.
//
// Usage: node ort_run.js MODEL.onnx INPUT.f32 N,C,H,W OUTPUT.f32 [BATCH]
//   INPUT.f32 / OUTPUT.f32: raw little-endian float32, row-major, batch outermost.
'use strict';

const fs = require('fs');
const ort = require('onnxruntime-node');

async function main() {
  const [modelPath, inputPath, shapeText, outputPath, batchText] = process.argv.slice(2);
  if (!outputPath) throw new Error('usage: node ort_run.js MODEL INPUT.f32 N,C,H,W OUTPUT.f32 [BATCH]');
  const shape = shapeText.split(',').map(Number);
  const total = shape[0];
  const perSample = shape.slice(1).reduce((a, b) => a * b, 1);
  const bytes = fs.readFileSync(inputPath);
  const input = new Float32Array(bytes.buffer, bytes.byteOffset, bytes.length / 4);
  if (input.length !== total * perSample) {
    throw new Error(`${inputPath}: ${input.length} floats, shape ${shapeText} needs ${total * perSample}`);
  }
  const session = await ort.InferenceSession.create(modelPath, {
    intraOpNumThreads: 2, interOpNumThreads: 1, graphOptimizationLevel: 'all',
  });
  const inputName = session.inputNames[0];
  const outputName = session.outputNames[0];
  const batch = Number(batchText || 250);
  const chunks = [];
  for (let start = 0; start < total; start += batch) {
    const n = Math.min(batch, total - start);
    const data = input.slice(start * perSample, (start + n) * perSample);
    const result = await session.run({[inputName]: new ort.Tensor('float32', data, [n, ...shape.slice(1)])});
    chunks.push(Buffer.from(result[outputName].data.buffer, result[outputName].data.byteOffset,
                            result[outputName].data.byteLength));
  }
  fs.writeFileSync(outputPath, Buffer.concat(chunks));
}

main().catch((e) => {
  console.error(e.message || e);
  process.exit(1);
});
