// The page: an image file or the camera, the channels, and the matching graph's top 5 and latency.
// index.html#selftest runs every bundled graph on the shipped images and compares with the
// logits Python's runtime.Classifier gave for them (see selftest/cases.json).
// Hash options: #selftest, #demo (classify the first sample image), backend=wasm|webgpu.
import * as ac from './anychannel.js';

const $ = (id) => document.getElementById(id);
const params = parseHash(location.hash);
const BACKEND_NAMES = { wasm: 'WebAssembly', webgpu: 'WebGPU' };

const state = {
  web: null,          // web.json: what the bundle holds
  manifest: null,     // manifest.json: the graphs and their sha256
  backend: 'wasm',
  threads: 1,
  graphs: new Map(),  // "RG/fp32" -> {session, spec, entry, loadMs, digestBy}
  current: null,      // the decoded image on screen: {rgba, width, height, name}
  stream: null,
  busy: false,
  cspViolations: [],
  turned: null,       // promise: format -> whether the browser applies EXIF orientation
};

// The CSP in index.html blocks any URL outside this folder; a violation means something tried.
document.addEventListener('securitypolicyviolation', (e) => {
  state.cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
});
window.addEventListener('hashchange', () => location.reload());

function parseHash(hash) {
  const out = {};
  for (const part of hash.replace(/^#/, '').split('&')) {
    if (!part) continue;
    const [key, value] = part.split('=');
    out[decodeURIComponent(key)] = value === undefined ? true : decodeURIComponent(value);
  }
  return out;
}

// --- messages ---------------------------------------------------------------------------------

function showMessage(text) {
  const box = $('message');
  box.textContent = text;
  box.hidden = !text;
}

function describe(err) {
  if (err instanceof ac.UserError) return err.message;
  return `${err && err.name ? err.name + ': ' : ''}${err && err.message ? err.message : err}`;
}

function setStatus(text) {
  $('status').textContent = text;
}

// --- fetching the bundle's files ----------------------------------------------------------------

async function fetchOk(url) {
  let response;
  try {
    response = await fetch(url, { cache: 'no-cache' });
  } catch (err) {
    throw new ac.UserError(`cannot fetch ${url} (${describe(err)}); serve this folder over http, e.g. ` +
                           '`python -m http.server -d DIR`, and open localhost:8000 in the browser');
  }
  if (!response.ok) throw new ac.UserError(`${url} is missing from the bundle (HTTP ${response.status})`);
  return response;
}

async function fetchJSON(url) {
  const response = await fetchOk(url);
  try {
    return await response.json();
  } catch (err) {
    throw new ac.UserError(`${url} is not valid JSON: ${describe(err)}`);
  }
}

async function fetchBytes(url) {
  return new Uint8Array(await (await fetchOk(url)).arrayBuffer());
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = src;
    script.onload = resolve;
    script.onerror = () => reject(new ac.UserError(`cannot load ${src}; the bundle is incomplete`));
    document.head.append(script);
  });
}

// --- onnxruntime-web ------------------------------------------------------------------------------

async function chooseBackend(asked) {
  const shipped = state.web.onnxruntime_web.backends;
  const wanted = asked || 'wasm';
  if (!(wanted in shipped)) {
    showMessage(`backend ${wanted} is not in this bundle (it has ${Object.keys(shipped).join(', ')}); ` +
                'using WebAssembly');
    return 'wasm';
  }
  if (wanted === 'webgpu') {
    // navigator.gpu can exist with no usable adapter (no GPU, or GPU access disabled).
    const adapter = navigator.gpu ? await navigator.gpu.requestAdapter().catch(() => null) : null;
    if (!adapter) {
      showMessage(`this browser has no WebGPU${navigator.gpu ? ' adapter' : ''}; using WebAssembly`);
      return 'wasm';
    }
  }
  return wanted;
}

async function loadOrt(backend) {
  const info = state.web.onnxruntime_web;
  await loadScript(info.backends[backend].script);
  if (typeof ort === 'undefined') throw new ac.UserError(`${info.backends[backend].script} did not define ort`);
  // The .wasm and .mjs files come from this folder, never from another site.
  ort.env.wasm.wasmPaths = new URL(info.wasm_paths, location.href).href;
  // Threads need cross-origin isolation (COOP/COEP headers), which a plain server does not send.
  state.threads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  ort.env.wasm.numThreads = state.threads;
  ort.env.wasm.proxy = false;
  ort.env.logLevel = 'error';
}

function entryFor(config, precision) {
  const graph = state.manifest.graphs[config];
  if (!graph) {
    throw new ac.UserError(`channels ${config} are not in this bundle; it holds ` +
                           `${Object.keys(state.manifest.graphs).join(', ')}`);
  }
  const item = precision === 'fp32' ? graph : graph[precision];
  if (!item) throw new ac.UserError(`the ${config} graph has no ${precision} variant in this bundle`);
  // As the runtime does: a manifest names files in its own folder, never elsewhere.
  return { file: String(item.file).split('/').pop(), sha256: String(item.sha256).toLowerCase(),
           config, precision };
}

/** A graph's session, after checking its bytes against the manifest and its metadata against the contract. */
async function loadGraph(config, precision) {
  const key = `${config}/${precision}`;
  if (state.graphs.has(key)) return state.graphs.get(key);
  const entry = entryFor(config, precision);
  const start = performance.now();
  const bytes = await fetchBytes(entry.file);
  const digest = await ac.sha256Hex(bytes);
  if (digest.hex !== entry.sha256) {
    throw new ac.UserError(`graph ${entry.file} does not match its manifest checksum (sha256 ` +
                           `${digest.hex.slice(0, 12)}..., expected ${entry.sha256.slice(0, 12)}...): it is ` +
                           'truncated, damaged or was modified; re-export it');
  }
  const spec = ac.graphSpec(ac.readOnnxMetadata(bytes), entry, state.manifest.class_names);
  let session;
  try {
    // The session is built from the very bytes that were hashed.
    session = await ort.InferenceSession.create(bytes, {
      executionProviders: [state.backend], graphOptimizationLevel: 'all' });
  } catch (err) {
    throw new ac.UserError(`onnxruntime-web cannot load ${entry.file} on ${BACKEND_NAMES[state.backend]}: ` +
                           describe(err));
  }
  if (!session.inputNames.includes('input') || !session.outputNames.includes('logits')) {
    throw new ac.UserError(`graph ${entry.file} does not follow the contract: inputs ${session.inputNames}, ` +
                           `outputs ${session.outputNames}; expected input -> logits`);
  }
  const graph = { session, spec, entry, digestBy: digest.by, loadMs: 0 };
  // One untimed run, so the latency shown is the steady state (as Classifier.warm_up).
  await run(graph, new Float32Array(spec.indices.length * spec.imageSize * spec.imageSize));
  graph.loadMs = performance.now() - start;
  state.graphs.set(key, graph);
  return graph;
}

async function run(graph, x) {
  const size = graph.spec.imageSize;
  const tensor = new ort.Tensor('float32', x, [1, graph.spec.indices.length, size, size]);
  const out = await graph.session.run({ input: tensor });
  return out.logits.data;
}

// --- images -------------------------------------------------------------------------------------

/** RGBA pixels of an image, video frame or bitmap, composited on black as runtime.preprocess.to_rgb does. */
function toRGBA(source, width, height) {
  if (!(width > 0 && height > 0)) throw new ac.UserError('zero-sized image');
  if (width * height > ac.MAX_IMAGE_PIXELS) {
    throw new ac.UserError(`the image is ${width}x${height}, over the limit of ${ac.MAX_IMAGE_PIXELS} pixels`);
  }
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.fillStyle = '#000';
  ctx.fillRect(0, 0, width, height);
  ctx.drawImage(source, 0, 0);
  return ctx.getImageData(0, 0, width, height).data;
}

/** Per format, whether this browser turns images by their EXIF orientation (decoding a probe tagged 6). */
function formatsTurned() {
  state.turned = state.turned || (async () => {
    const turned = {};
    for (const [format, file] of Object.entries(state.web.orientation_probes || {})) {
      try {
        const bitmap = await createImageBitmap(await (await fetchOk(file)).blob());
        turned[format] = bitmap.width === 1 && bitmap.height === 2;  // stored 2 x 1: a quarter turn
        bitmap.close();
      } catch (err) {
        turned[format] = false;
      }
    }
    return turned;
  })();
  return state.turned;
}

/**
 * Decode a file as Pillow does: the pixels as stored (EXIF orientation undone), no colour management,
 * transparent pixels composited on black.
 */
async function decodeImage(blob, name) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob, { premultiplyAlpha: 'none', colorSpaceConversion: 'none' });
  } catch (err) {
    throw new ac.UserError(`cannot read ${name}: this browser cannot decode it as an image (${describe(err)})`);
  }
  const { width, height } = bitmap;  // close() zeroes them
  let drawn;
  try {
    drawn = toRGBA(bitmap, width, height);
  } finally {
    bitmap.close();
  }
  // EXIF sits in the first kilobytes (JPEG APP1, PNG chunks before the image data, WebP chunks).
  const head = new Uint8Array(await blob.slice(0, 1 << 18).arrayBuffer());
  const format = ac.imageFormat(head);
  const orientation = ac.exifOrientation(head);
  const turned = orientation !== 1 && format !== null && (await formatsTurned())[format];
  const stored = turned ? ac.undoOrientation(drawn, width, height, orientation) : { rgba: drawn, width, height };
  return { ...stored, name, orientation: turned ? orientation : 1 };
}

/** The graph's input for an image: resized like training, the configuration's planes, normalised. */
function preprocess(image, spec) {
  const rgb = ac.rgbaToRGB(image.rgba, image.width, image.height);
  const canvas = ac.resizeToInput(rgb, image.width, image.height, spec.imageSize,
                                  state.web.preprocess.pillow_vertical_first);
  return { canvas, x: ac.toInput(canvas, spec.imageSize, spec.indices, spec.mean, spec.std) };
}

async function classify(image, config, precision) {
  const graph = await loadGraph(config, precision);
  const t0 = performance.now();
  const { canvas, x } = preprocess(image, graph.spec);
  const t1 = performance.now();
  const logits = await run(graph, x);
  const t2 = performance.now();
  return { graph, canvas, x, logits, preprocessMs: t1 - t0, inferenceMs: t2 - t1 };
}

// --- the interactive page -------------------------------------------------------------------------

function selected() {
  return { config: $('channels').value, precision: $('precision').value || 'fp32' };
}

function drawSource(image) {
  const view = $('source-view');
  view.width = image.width;
  view.height = image.height;
  view.getContext('2d').putImageData(new ImageData(new Uint8ClampedArray(image.rgba), image.width, image.height), 0, 0);
  // Small images are shown enlarged (pixelated), large ones fit the panel.
  const scale = Math.min(8, 320 / image.width, 240 / image.height);
  view.style.width = `${Math.round(image.width * scale)}px`;
  view.style.height = `${Math.round(image.height * scale)}px`;
  view.hidden = false;
  $('source-caption').textContent = `${image.name}: ${image.width}×${image.height}` +
    (image.orientation && image.orientation !== 1 ? ` (as stored; EXIF orientation ${image.orientation} undone)` : '');
}

function drawInput(canvas, spec) {
  const size = spec.imageSize;
  const view = $('input-view');
  view.width = size;
  view.height = size;
  const rgba = new Uint8ClampedArray(size * size * 4);
  for (let i = 0; i < size * size; i++) {
    for (const c of spec.indices) rgba[i * 4 + c] = canvas[i * 3 + c];  // absent planes stay black
    rgba[i * 4 + 3] = 255;
  }
  view.getContext('2d').putImageData(new ImageData(rgba, size, size), 0, 0);
  $('input-caption').textContent = `Model input: ${spec.config}, ${size}×${size}`;
}

/** A duration as the clock can tell it: without cross-origin isolation it ticks in 0.1 ms. */
function ms(value) {
  if (self.crossOriginIsolated) return `${value.toFixed(2)} ms`;
  return value < 0.1 ? '< 0.1 ms' : `${value.toFixed(1)} ms`;
}

function showResult(result) {
  const body = $('top5').querySelector('tbody');
  body.replaceChildren();
  ac.topK(result.logits, state.manifest.class_names, 5).forEach((p, rank) => {
    const row = body.insertRow();
    row.insertCell().textContent = String(rank + 1);
    row.insertCell().textContent = p.label;
    const prob = row.insertCell();
    prob.className = 'num';
    prob.textContent = `${(100 * p.probability).toFixed(2)}%`;
    const bar = document.createElement('div');
    bar.className = 'bar';
    bar.style.width = `${Math.max(1, Math.round(100 * p.probability))}%`;
    row.insertCell().append(bar);
  });
  const { graph } = result;
  $('latency').textContent =
    `latency: inference ${ms(result.inferenceMs)} (session.run, ${BACKEND_NAMES[state.backend]}, ` +
    `${state.threads} thread${state.threads > 1 ? 's' : ''}) · ` +
    `preprocessing ${ms(result.preprocessMs)} · ` +
    `graph load ${graph.loadMs.toFixed(0)} ms (once)`;
  $('verified').textContent = `${graph.entry.file}: sha256 verified (${graph.digestBy}) against manifest.json`;
  $('result').hidden = false;
}

async function classifyCurrent() {
  if (!state.current || state.busy) return;
  state.busy = true;
  try {
    const { config, precision } = selected();
    const result = await classify(state.current, config, precision);
    drawInput(result.canvas, result.graph.spec);
    showResult(result);
    showMessage('');
  } catch (err) {
    $('result').hidden = true;
    showMessage(describe(err));
  } finally {
    state.busy = false;
  }
}

async function onFile(file) {
  if (!file) return;
  stopCamera();
  try {
    state.current = await decodeImage(file, file.name);
  } catch (err) {
    state.current = null;
    $('result').hidden = true;
    showMessage(describe(err));
    return;
  }
  drawSource(state.current);
  await classifyCurrent();
}

async function startCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new ac.UserError(window.isSecureContext
      ? 'this browser gives no camera access (getUserMedia)'
      : 'the camera needs a secure context: open the page from localhost on this device, or serve it over TLS');
  }
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: 'environment' }, audio: false });
  } catch (err) {
    throw new ac.UserError(`the camera could not be opened: ${describe(err)}`);
  }
  const video = $('video');
  video.srcObject = state.stream;
  await video.play();
  video.hidden = false;
  $('source-view').hidden = true;
  $('source-caption').textContent = 'camera';
  for (const id of ['capture', 'stop', 'live-label']) $(id).hidden = false;
  $('camera').hidden = true;
}

function stopCamera() {
  if (!state.stream) return;
  for (const track of state.stream.getTracks()) track.stop();
  state.stream = null;
  $('video').hidden = true;
  $('live').checked = false;
  for (const id of ['capture', 'stop', 'live-label']) $(id).hidden = true;
  $('camera').hidden = false;
}

async function captureFrame() {
  const video = $('video');
  if (!state.stream || !video.videoWidth) return;
  try {
    state.current = { rgba: toRGBA(video, video.videoWidth, video.videoHeight), width: video.videoWidth,
                      height: video.videoHeight, name: 'camera frame' };
  } catch (err) {
    showMessage(describe(err));
    return;
  }
  await classifyCurrent();
  $('source-caption').textContent = `camera frame: ${video.videoWidth}×${video.videoHeight}`;
}

async function liveLoop() {
  while ($('live').checked && state.stream) {
    await captureFrame();
    await new Promise((resolve) => requestAnimationFrame(resolve));
  }
}

function fillSelect(select, options, value) {
  select.replaceChildren(...options.map(([v, label, disabled]) => {
    const option = new Option(label, v, false, v === value);
    option.disabled = Boolean(disabled);
    return option;
  }));
}

function setupControls() {
  const exported = Object.keys(state.manifest.graphs);
  fillSelect($('channels'), ac.CONFIG_NAMES.map((c) => [c, exported.includes(c) ? c : `${c} (not exported)`,
                                                        !exported.includes(c)]), exported[0]);
  const precisions = state.web.precisions;
  fillSelect($('precision'), precisions.map((p) => [p, p]), precisions[0]);
  $('precision-label').hidden = precisions.length < 2;
  const shipped = Object.keys(state.web.onnxruntime_web.backends);
  const absent = (b) => b === 'webgpu' && !navigator.gpu;
  fillSelect($('backend'), shipped.map((b) => [b, BACKEND_NAMES[b] + (absent(b) ? ' (not in this browser)' : ''),
                                               absent(b)]), state.backend);
  $('file').addEventListener('change', (e) => onFile(e.target.files[0]));
  $('camera').addEventListener('click', () => startCamera().catch((err) => showMessage(describe(err))));
  $('stop').addEventListener('click', stopCamera);
  $('capture').addEventListener('click', captureFrame);
  $('live').addEventListener('change', liveLoop);
  $('channels').addEventListener('change', classifyCurrent);
  $('precision').addEventListener('change', classifyCurrent);
  // onnxruntime-web's backends come from different scripts: switching reloads the page.
  $('backend').addEventListener('change', (e) => {
    const rest = Object.entries(params).filter(([k]) => k !== 'backend')
      .map(([k, v]) => (v === true ? k : `${k}=${v}`));
    location.hash = [...rest, `backend=${e.target.value}`].join('&');
  });
  $('bundle-info').textContent = `${state.web.task} ${state.web.model}, ` +
    `${state.manifest.class_names.length} classes, ${state.web.image_size} px · ` +
    `onnxruntime-web ${state.web.onnxruntime_web.version}`;
}

async function classifySample() {
  const cases = await fetchJSON(state.web.selftest.cases);
  const sample = cases.images[0];
  state.current = await decodeImage(new Blob([await fetchBytes(sample.file)]), sample.file);
  drawSource(state.current);
  await classifyCurrent();
}

// --- the self-test ------------------------------------------------------------------------------

function percentile(sorted, q) {
  const pos = (sorted.length - 1) * q;
  const low = Math.floor(pos);
  const high = Math.ceil(pos);
  return sorted[low] + (sorted[high] - sorted[low]) * (pos - low);
}

/**
 * session.run latency on one input. Without cross-origin isolation performance.now() ticks in 0.1 ms,
 * coarser than a small graph's run, so each sample times a block of calls (at least 2 ms) and
 * divides: up to `samples` samples within `budgetMs`, after a few untimed calls.
 */
async function timeRuns(graph, x, samples = 25, budgetMs = 2000) {
  for (let i = 0; i < 3; i++) await run(graph, x);
  let block = 1;
  for (; block < 256; block *= 2) {
    let fastest = Infinity;  // the fastest of three tries, so that one slow call cannot end the search
    for (let k = 0; k < 3; k++) {
      const t0 = performance.now();
      for (let i = 0; i < block; i++) await run(graph, x);
      fastest = Math.min(fastest, performance.now() - t0);
    }
    if (fastest >= 2) break;
  }
  const times = [];
  const start = performance.now();
  while (times.length < samples && (times.length < 5 || performance.now() - start < budgetMs)) {
    const t0 = performance.now();
    for (let i = 0; i < block; i++) await run(graph, x);
    times.push((performance.now() - t0) / block);
  }
  times.sort((a, b) => a - b);
  return { p50_ms: percentile(times, 0.5), p90_ms: percentile(times, 0.9), samples: times.length,
           calls_per_sample: block, runs: times.length * block,
           mean_ms: times.reduce((a, t) => a + t, 0) / times.length };
}

async function checkGraph(reference, images, tolerance) {
  const row = { channels: reference.channels, precision: reference.precision, ok: false, error: null };
  try {
    let maxDiff = 0;
    let top1 = 0;
    let pixelsOff = 0;
    let first = null;
    for (const [i, image] of images.entries()) {
      const result = await classify(image.decoded, reference.channels, reference.precision);
      first = first || result;
      for (let j = 0; j < image.resized.length; j++) if (result.canvas[j] !== image.resized[j]) pixelsOff++;
      const want = reference.logits[i];
      if (result.logits.length !== want.length) {
        throw new ac.UserError(`${result.logits.length} logits, the reference has ${want.length}`);
      }
      want.forEach((v, j) => { maxDiff = Math.max(maxDiff, Math.abs(result.logits[j] - v)); });
      if (ac.argmax(result.logits) === reference.top1[i]) top1++;
    }
    Object.assign(row, { images: images.length, top1_match: top1, max_abs_diff: maxDiff, pixels_differ: pixelsOff,
                         preprocess_ms: first.preprocessMs, load_ms: first.graph.loadMs,
                         sha256_by: first.graph.digestBy });
    row.latency = await timeRuns(first.graph, first.x);
    row.ok = top1 === images.length && maxDiff <= tolerance && pixelsOff === 0;
    if (!row.ok) {
      row.error = [top1 < images.length ? `top-1 differs on ${images.length - top1} image(s)` : '',
                   maxDiff > tolerance ? `max |logit difference| ${maxDiff.toExponential(2)} > ${tolerance}` : '',
                   pixelsOff ? `${pixelsOff} resized pixel values differ from Pillow's` : '']
        .filter(Boolean).join('; ');
    }
  } catch (err) {
    row.error = describe(err);
  }
  return row;
}

function selftestRow(row) {
  const tr = $('selftest-table').querySelector('tbody').insertRow();
  const cells = [row.channels, row.precision, row.ok ? 'ok' : `FAILED: ${row.error}`,
                 row.images === undefined ? '' : `${row.top1_match}/${row.images}`,
                 row.max_abs_diff === undefined ? '' : row.max_abs_diff.toExponential(2),
                 row.pixels_differ === undefined ? '' : (row.pixels_differ ? `${row.pixels_differ} differ` : 'exact'),
                 row.latency ? row.latency.p50_ms.toFixed(3) : '', row.latency ? row.latency.p90_ms.toFixed(3) : '',
                 row.latency ? String(row.latency.runs) : ''];
  cells.forEach((text, i) => {
    const td = tr.insertCell();
    td.textContent = text;
    if (i === 2) td.className = row.ok ? 'ok' : 'fail';
    if (i >= 4) td.classList.add('num');
  });
}

function finishSelftest(rows, total, extra = {}) {
  const ok = rows.filter((r) => r.ok).length;
  // With nothing to test (the bundle could not even be read) the line must not look like a pass.
  const line = total > 0 ? `selftest: ${ok}/${total} ok` : `selftest: failed (${extra.error || 'no graphs'})`;
  const summary = { line, ok, total, backend: state.backend, threads: state.threads,
                    onnxruntime_web: state.web ? state.web.onnxruntime_web.version : null,
                    user_agent: navigator.userAgent, csp_violations: state.cspViolations, graphs: rows, ...extra };
  $('selftest').textContent = line;
  $('selftest').className = `selftest ${ok === total && total > 0 ? 'ok' : 'fail'}`;
  $('selftest-json').textContent = JSON.stringify(summary);
  document.title = line;
  document.documentElement.dataset.selftest = ok === total && total > 0 ? 'pass' : 'fail';
  console.log(line);
}

async function runSelftest() {
  $('selftest-panel').hidden = false;
  const cases = await fetchJSON(state.web.selftest.cases);
  const images = [];
  for (const item of cases.images) {
    const decoded = await decodeImage(new Blob([await fetchBytes(item.file)]), item.file);
    images.push({ ...item, decoded, resized: await fetchBytes(item.resized) });
  }
  const decodeChecks = [];
  for (const item of cases.decode_checks || []) {
    const check = { file: item.file, what: item.what };
    try {
      const decoded = await decodeImage(new Blob([await fetchBytes(item.file)]), item.file);
      const want = await fetchBytes(item.decoded);
      const got = ac.rgbaToRGB(decoded.rgba, decoded.width, decoded.height);
      let differ = 0;
      let maxDiff = 0;
      if (got.length !== want.length) throw new ac.UserError(`decoded to ${decoded.width}x${decoded.height}`);
      for (let j = 0; j < got.length; j++) {
        const d = Math.abs(got[j] - want[j]);
        if (d) differ++;
        maxDiff = Math.max(maxDiff, d);
      }
      Object.assign(check, { exact: differ === 0, values_differ: differ, max_diff: maxDiff });
    } catch (err) {
      check.error = describe(err);
    }
    decodeChecks.push(check);
  }
  $('decode-checks').textContent = decodeChecks.map((c) => `${c.what}: ${c.error ? c.error : c.exact ? 'exact'
    : `${c.values_differ} values differ (at most ${c.max_diff} levels)`}`).join('; ');
  const rows = [];
  for (const reference of cases.graphs) {
    setStatus(`self-test: ${reference.channels} ${reference.precision}…`);
    const row = await checkGraph(reference, images, cases.tolerance);
    rows.push(row);
    selftestRow(row);
  }
  finishSelftest(rows, cases.graphs.length, { tolerance: cases.tolerance, images: cases.images.length,
                                                decode_checks: decodeChecks });
  if (images.length) {
    state.current = images[0].decoded;
    drawSource(state.current);
    await classifyCurrent();
  }
}

// --- start ------------------------------------------------------------------------------------

async function boot() {
  if (location.protocol === 'file:') {
    throw new ac.UserError('open this page through a web server, not as a file: `python -m http.server -d DIR`, ' +
                           'then open localhost:8000');
  }
  if (typeof WebAssembly !== 'object' || typeof WebAssembly.instantiate !== 'function') {
    throw new ac.UserError('this browser has no WebAssembly, which onnxruntime-web needs to run the graphs: use a ' +
                           'current Chrome, Edge, Firefox or Safari, with WebAssembly enabled');
  }
  [state.web, state.manifest] = await Promise.all([fetchJSON('web.json'), fetchJSON('manifest.json')]);
  state.backend = await chooseBackend(params.backend);
  await loadOrt(state.backend);
  setupControls();
  setStatus(`Ready: ${Object.keys(state.manifest.graphs).length} graph(s), ${BACKEND_NAMES[state.backend]}` +
            `${state.backend === 'wasm' ? `, ${state.threads} thread${state.threads > 1 ? 's' : ''}` : ''}. ` +
            'Choose an image or the camera.');
  if (params.selftest) await runSelftest();
  else if (params.demo) await classifySample();
  setStatus(`Ready: ${BACKEND_NAMES[state.backend]}${state.backend === 'wasm' ? `, ${state.threads} thread(s)` : ''}.`);
}

boot().catch((err) => {
  setStatus('Not ready.');
  showMessage(describe(err));
  if (params.selftest) {
    $('selftest-panel').hidden = false;
    const total = state.manifest ? Object.keys(state.manifest.graphs).length : 0;
    finishSelftest([], total, { error: describe(err) });
  }
});
