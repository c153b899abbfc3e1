// Runs export/web_template/anychannel.js (the page's preprocessing) on inputs that tests/test_web.py
// made with Pillow and numpy, and prints what it computes, for the test to compare.
//   node tests/web_check.mjs ANYCHANNEL_JS_URL CASES_JSON
import { readFileSync } from 'node:fs';

const ac = await import(process.argv[2]);
const cases = JSON.parse(readFileSync(process.argv[3], 'utf8'));
const bytes = (b64) => new Uint8Array(Buffer.from(b64, 'base64'));
const b64 = (view) => Buffer.from(view.buffer, view.byteOffset, view.byteLength).toString('base64');

const out = {
  resize: cases.resize.map((c) => b64(ac.resizeToInput(bytes(c.rgb), c.w, c.h, c.size, c.vertical_first))),
  input: cases.input.map((c) => b64(ac.toInput(bytes(c.rgb), c.size, ac.channelIndices(c.config), c.mean, c.std))),
  topk: cases.topk.map((c) => ac.topK(c.logits, c.names, c.k).map((p) => p.index)),
  sha256: cases.sha256.map((c) => ac.sha256Fallback(bytes(c))),
  metadata: cases.metadata.map((c) => ac.readOnnxMetadata(bytes(c))),
  orientation: cases.orientation.map((c) => [ac.imageFormat(bytes(c)), ac.exifOrientation(bytes(c))]),
  undo: cases.undo.map((c) => {
    const r = ac.undoOrientation(bytes(c.rgba), c.w, c.h, c.orientation);
    return { w: r.width, h: r.height, rgba: b64(r.rgba) };
  }),
  spec_errors: cases.specs.map((c) => {
    try {
      const spec = ac.graphSpec(c.metadata, c.entry, c.class_names);
      return spec.indices.join(',');
    } catch (err) {
      return `error: ${err.message}`;
    }
  }),
};
console.log(JSON.stringify(out));
