// anychannel's preprocessing and postprocessing for the browser: no DOM, no onnxruntime.
//
// Everything here reproduces runtime/ (Python) bit for bit, so that the page and
// runtime.Classifier feed a graph the same float32 input:
//   - resizeToInput: runtime.preprocess.resize, i.e. PIL's ImageOps.fit(img, (S, S), BILINEAR),
//     a port of Pillow's fixed-point two-pass resampler (src/libImaging/Resample.c);
//   - toInput: runtime.preprocess.uint8_batch_to_input (select planes, /255, -mean, /std in float32);
//   - softmax / topK: runtime.classifier.softmax and Classifier.top_k (float64, stable order);
//   - graphSpec: runtime.artifacts.graph_spec's checks of a graph's metadata_props.
// It is an ES module so that node can import it too (tests compare it with Pillow).

/** How the graphs expect images to be resized (runtime.preprocess.RESIZE_MODE / INTERPOLATION). */
export const RESIZE_MODE = 'resize_shorter_center_crop';
export const INTERPOLATION = 'bilinear';
/** Colour planes of a decoded image in storage order, and the seven configurations (runtime.channels). */
export const CHANNEL_NAMES = ['R', 'G', 'B'];
export const CONFIG_NAMES = ['RGB', 'RG', 'GB', 'RB', 'R', 'G', 'B'];
/** The contract's metadata keys (runtime.contract.META_*). */
export const META = {
  contract: 'anychannel.contract_version',
  channels: 'anychannel.channels',
  channelIndices: 'anychannel.channel_indices',
  classNames: 'anychannel.class_names',
  mean: 'anychannel.mean',
  std: 'anychannel.std',
  imageSize: 'anychannel.image_size',
  resize: 'anychannel.resize',
  interpolation: 'anychannel.interpolation',
  precision: 'anychannel.precision',
};
export const CONTRACT_VERSION = 1;
/** runtime.preprocess.MAX_IMAGE_PIXELS: larger images are refused. */
export const MAX_IMAGE_PIXELS = 64 * 1024 * 1024;

// Pillow keeps 8-bit filter weights as fixed point with this many fraction bits (32 - 8 - 2).
const PRECISION_BITS = 22;
const ONE = 1 << PRECISION_BITS;
const f32 = Math.fround;

/** An error whose message is meant for the page's user, as is. */
export class UserError extends Error {}

/** The planes' positions in an RGB image: "RB" -> [0, 2] (runtime.channels.ChannelConfig.indices). */
export function channelIndices(config) {
  return Array.from(config, (c) => CHANNEL_NAMES.indexOf(c));
}

/** RGBA pixels (canvas getImageData, already composited on black) to packed RGB. */
export function rgbaToRGB(rgba, width, height) {
  const n = width * height;
  const rgb = new Uint8Array(n * 3);
  for (let i = 0, j = 0; i < n; i++, j += 4) {
    rgb[i * 3] = rgba[j];
    rgb[i * 3 + 1] = rgba[j + 1];
    rgb[i * 3 + 2] = rgba[j + 2];
  }
  return rgb;
}

/** ImageOps.fit's crop box for a square output: the centred square of the shorter side (Python floats). */
export function fitBox(width, height, size) {
  // bleed is 0 and centering (0.5, 0.5): the same double arithmetic as PIL/ImageOps.py.
  const liveW = width - 0.0 * 2;
  const liveH = height - 0.0 * 2;
  const liveRatio = liveW / liveH;
  const outputRatio = size / size;
  let cropW;
  let cropH;
  if (liveRatio === outputRatio) {
    cropW = liveW;
    cropH = liveH;
  } else if (liveRatio >= outputRatio) {
    cropW = outputRatio * liveH;
    cropH = liveH;
  } else {
    cropW = liveW;
    cropH = liveW / outputRatio;
  }
  const left = 0.0 + (liveW - cropW) * 0.5;
  const top = 0.0 + (liveH - cropH) * 0.5;
  return [left, top, left + cropW, top + cropH];
}

function bilinearFilter(x) {
  if (x < 0.0) x = -x;
  return x < 1.0 ? 1.0 - x : 0.0;
}

// Pillow's precompute_coeffs + normalize_coeffs_8bpc for the bilinear filter. in0 and in1 are C
// floats there (the box arrives as "(ffff)"), hence Math.fround; C's (int) casts truncate.
function precomputeCoeffs(inSize, in0, in1, outSize) {
  const scale = f32(in1 - in0) / outSize;
  const filterscale = scale < 1.0 ? 1.0 : scale;
  const support = 1.0 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = in0 + (xx + 0.5) * scale;
    let ww = 0.0;
    const ss = 1.0 / filterscale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    for (let x = 0; x < xmax; x++) {
      w[x] = bilinearFilter((x + xmin - center + 0.5) * ss);
      ww += w[x];
    }
    for (let x = 0; x < xmax; x++) {
      const k = ww !== 0.0 ? w[x] / ww : w[x];
      kk[xx * ksize + x] = k < 0 ? Math.trunc(-0.5 + k * ONE) : Math.trunc(0.5 + k * ONE);
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

// clip8: Pillow looks up (ss >> 22) in a table that clamps to 0..255.
function clip8(ss) {
  const v = ss >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

function resampleHorizontal(src, srcW, outW, rows, rowOffset, c) {
  const out = new Uint8Array(outW * rows * 3);
  for (let yy = 0; yy < rows; yy++) {
    const row = (yy + rowOffset) * srcW * 3;
    for (let xx = 0; xx < outW; xx++) {
      const xmin = c.bounds[xx * 2];
      const xmax = c.bounds[xx * 2 + 1];
      convolvePixel(src, row + xmin * 3, 3, xmax, c.kk, xx * c.ksize, out, (yy * outW + xx) * 3);
    }
  }
  return out;
}

// One output pixel of a resampling pass: `taps` input pixels from `first`, `step` apart, weighted
// by the fixed-point kernel `kk[k...]`, rounded and clipped as Pillow does.
function convolvePixel(src, first, step, taps, kk, k, out, o) {
  let s0 = 1 << (PRECISION_BITS - 1);
  let s1 = s0;
  let s2 = s0;
  for (let t = 0, p = first; t < taps; t++, p += step) {
    const w = kk[k + t];
    s0 += src[p] * w;
    s1 += src[p + 1] * w;
    s2 += src[p + 2] * w;
  }
  out[o] = clip8(s0);
  out[o + 1] = clip8(s1);
  out[o + 2] = clip8(s2);
}

function resampleVertical(src, width, outH, c) {
  const out = new Uint8Array(width * outH * 3);
  for (let yy = 0; yy < outH; yy++) {
    const ymin = c.bounds[yy * 2];
    const ymax = c.bounds[yy * 2 + 1];
    for (let xx = 0; xx < width; xx++) {
      convolvePixel(src, (ymin * width + xx) * 3, width * 3, ymax, c.kk, yy * c.ksize, out, (yy * width + xx) * 3);
    }
  }
  return out;
}

function crop(src, srcW, x0, y0, w, h) {
  const out = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) {
    out.set(src.subarray(((y + y0) * srcW + x0) * 3, ((y + y0) * srcW + x0 + w) * 3), y * w * 3);
  }
  return out;
}

/**
 * Pillow's Image.resize((xsize, ysize), BILINEAR, box) of a packed RGB image, bit for bit:
 * _imaging.c's _resize (integer crops are copies) and Resample.c's ImagingResampleInner.
 * `verticalFirst`: Pillow 13 and newer run the vertical pass first when the height shrinks by more
 * than twice what the width does (python-pillow/Pillow#9549); older versions always start horizontally.
 * The order changes some pixels by one level, so the bundle says which Pillow made its references.
 */
export function pillowResize(rgb, width, height, xsize, ysize, box, verticalFirst = true) {
  const b = box.map(f32);
  if (b[0] - Math.trunc(b[0]) === 0 && f32(b[2] - b[0]) === xsize &&
      b[1] - Math.trunc(b[1]) === 0 && f32(b[3] - b[1]) === ysize) {
    return crop(rgb, width, Math.trunc(b[0]), Math.trunc(b[1]), xsize, ysize);
  }
  // Pillow compares box[2] with the output width here, not the input's: kept as is.
  const needH = xsize !== width || b[0] !== 0 || b[2] !== xsize;
  const needV = ysize !== height || b[1] !== 0 || b[3] !== ysize;
  const horizontalFirst = !(verticalFirst && height - ysize > 0 && height - ysize > (width - xsize) * 2);
  const vert = needV || (needH && horizontalFirst) ? precomputeCoeffs(height, b[1], b[3], ysize) : null;
  const horiz = needH ? precomputeCoeffs(width, b[0], b[2], xsize) : null;
  let img = rgb;
  let w = width;
  if (horizontalFirst) {
    if (needH) {
      // Only the rows the vertical pass will read.
      const yFirst = vert.bounds[0];
      const yLast = vert.bounds[ysize * 2 - 2] + vert.bounds[ysize * 2 - 1];
      for (let i = 0; i < ysize; i++) vert.bounds[i * 2] -= yFirst;
      img = resampleHorizontal(img, w, xsize, yLast - yFirst, yFirst, horiz);
      w = xsize;
    }
    if (needV) img = resampleVertical(img, w, ysize, vert);
  } else {
    if (needV) img = resampleVertical(img, w, ysize, vert);
    if (needH) img = resampleHorizontal(img, w, xsize, ysize, 0, horiz);
  }
  return img === rgb ? rgb.slice() : img;
}

/** runtime.preprocess.resize: shorter side to `size`, centre crop, bilinear; packed RGB in and out. */
export function resizeToInput(rgb, width, height, size, verticalFirst = true) {
  if (width === size && height === size) return rgb;
  return pillowResize(rgb, width, height, size, size, fitBox(width, height, size), verticalFirst);
}

/**
 * The graph's N=1 input, planes first: runtime.preprocess.uint8_batch_to_input for one image.
 * float32 at every step as numpy does it: (float32(v) / 255 - mean32) / std32.
 */
export function toInput(rgb, size, indices, mean, std) {
  const plane = size * size;
  const x = new Float32Array(indices.length * plane);
  indices.forEach((src, c) => {
    const m = f32(mean[c]);
    const s = f32(std[c]);
    for (let i = 0; i < plane; i++) {
      x[c * plane + i] = f32(f32(rgb[i * 3 + src] / 255) - m) / s;
    }
  });
  return x;
}

/** Row softmax in float64 (runtime.classifier.softmax). */
export function softmax(logits) {
  let max = -Infinity;
  for (const v of logits) max = Math.max(max, v);
  const p = Float64Array.from(logits, (v) => Math.exp(v - max));
  const sum = p.reduce((a, v) => a + v, 0);
  return p.map((v) => v / sum);
}

/** The k most probable classes, most probable first; ties in class order (Classifier.top_k). */
export function topK(logits, classNames, k = 5) {
  const p = softmax(logits);
  const order = Array.from(p.keys()).sort((a, b) => (p[b] - p[a]) || (a - b));
  return order.slice(0, Math.min(k, p.length)).map((i) => ({ index: i, label: classNames[i], probability: p[i] }));
}

/** Index of the largest logit (first on ties, as numpy's argmax). */
export function argmax(values) {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

// --- EXIF orientation ------------------------------------------------------------------------
// Browsers draw a JPEG or PNG upright by its EXIF orientation tag, and no option of createImageBitmap
// turns that off (Chromium treats imageOrientation 'none' as 'from-image'); Chromium ignores the tag
// in WebP. Pillow, and so the runtime and training, read the pixels as stored. The page therefore
// asks the browser which formats it turns (a probe image per format) and undoes the turn.

const ascii = (bytes, at, text) => Array.from(text).every((c, i) => bytes[at + i] === c.charCodeAt(0));

/** 'jpeg', 'png', 'webp' or null, from a file's first bytes. */
export function imageFormat(bytes) {
  if (bytes[0] === 0xff && bytes[1] === 0xd8) return 'jpeg';
  if (ascii(bytes, 0, '\x89PNG')) return 'png';
  if (ascii(bytes, 0, 'RIFF') && ascii(bytes, 8, 'WEBP')) return 'webp';
  return null;
}

function tiffOrientation(bytes, start, end) {
  if (end - start < 8) return 1;
  const view = new DataView(bytes.buffer, bytes.byteOffset + start, end - start);
  const little = view.getUint16(0) === 0x4949;  // "II"; "MM" is big-endian
  if (!little && view.getUint16(0) !== 0x4d4d) return 1;
  const ifd = view.getUint32(4, little);
  if (ifd + 2 > view.byteLength) return 1;
  const count = view.getUint16(ifd, little);
  for (let i = 0; i < count; i++) {
    const at = ifd + 2 + i * 12;
    if (at + 12 > view.byteLength) break;
    if (view.getUint16(at, little) === 0x0112) {
      const value = view.getUint16(at + 8, little);
      return value >= 1 && value <= 8 ? value : 1;
    }
  }
  return 1;
}

/** The EXIF orientation (1-8; 1 = as stored) of a JPEG, PNG (eXIf) or WebP file's bytes. */
export function exifOrientation(bytes) {
  const format = imageFormat(bytes);
  try {
    if (format === 'jpeg') {  // JPEG: APP1 "Exif\0\0" before the scan
      let at = 2;
      while (at + 4 <= bytes.length && bytes[at] === 0xff) {
        const marker = bytes[at + 1];
        if (marker === 0xda || marker === 0xd9) break;
        const length = (bytes[at + 2] << 8) | bytes[at + 3];
        if (marker === 0xe1 && ascii(bytes, at + 4, 'Exif\0\0')) {
          return tiffOrientation(bytes, at + 10, at + 2 + length);
        }
        at += 2 + length;
      }
    } else if (format === 'png') {  // PNG: an eXIf chunk before the image data
      let at = 8;
      while (at + 8 <= bytes.length) {
        const length = new DataView(bytes.buffer, bytes.byteOffset + at, 4).getUint32(0);
        if (ascii(bytes, at + 4, 'IDAT')) break;
        if (ascii(bytes, at + 4, 'eXIf')) return tiffOrientation(bytes, at + 8, at + 8 + length);
        at += 12 + length;
      }
    } else if (format === 'webp') {  // WebP: an EXIF chunk
      let at = 12;
      while (at + 8 <= bytes.length) {
        const length = new DataView(bytes.buffer, bytes.byteOffset + at + 4, 4).getUint32(0, true);
        if (ascii(bytes, at, 'EXIF')) {
          const skip = ascii(bytes, at + 8, 'Exif\0\0') ? 6 : 0;
          return tiffOrientation(bytes, at + 8 + skip, at + 8 + length);
        }
        at += 8 + length + (length % 2);
      }
    }
  } catch (err) {
    return 1;  // a damaged header: the decoder will say so, or the pixels stay as drawn
  }
  return 1;
}

/**
 * The stored pixels of an image the browser drew upright by EXIF `orientation`: RGBA in (as drawn,
 * `width` x `height`), {rgba, width, height} out (as stored).
 */
export function undoOrientation(rgba, width, height, orientation) {
  if (orientation === 1) return { rgba, width, height };
  const swap = orientation >= 5;  // 5-8 turn by a quarter: the stored image is height x width
  const w = swap ? height : width;
  const h = swap ? width : height;
  // Where stored pixel (x, y) landed in the drawn image, per EXIF orientation.
  const drawnAt = {
    2: (x, y) => [w - 1 - x, y], 3: (x, y) => [w - 1 - x, h - 1 - y], 4: (x, y) => [x, h - 1 - y],
    5: (x, y) => [y, x], 6: (x, y) => [h - 1 - y, x], 7: (x, y) => [h - 1 - y, w - 1 - x],
    8: (x, y) => [y, w - 1 - x],
  }[orientation];
  const out = new Uint8ClampedArray(w * h * 4);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const [dx, dy] = drawnAt(x, y);
      const src = (dy * width + dx) * 4;
      const dst = (y * w + x) * 4;
      out[dst] = rgba[src];
      out[dst + 1] = rgba[src + 1];
      out[dst + 2] = rgba[src + 2];
      out[dst + 3] = rgba[src + 3];
    }
  }
  return { rgba: out, width: w, height: h };
}

// --- ONNX metadata, read from the verified bytes -------------------------------------------

function readVarint(bytes, pos) {
  // Plain arithmetic, not bit operations: lengths may pass 2^31.
  let value = 0;
  let scale = 1;
  for (;;) {
    if (pos >= bytes.length) throw new Error('truncated varint');
    const b = bytes[pos++];
    value += (b & 0x7f) * scale;
    if (b < 0x80) return [value, pos];
    scale *= 128;
  }
}

function fields(bytes, start, end, visit) {
  let pos = start;
  while (pos < end) {
    let tag;
    [tag, pos] = readVarint(bytes, pos);
    const field = Math.floor(tag / 8);
    const wire = tag % 8;
    if (wire === 0) {
      [, pos] = readVarint(bytes, pos);
    } else if (wire === 1) {
      pos += 8;
    } else if (wire === 5) {
      pos += 4;
    } else if (wire === 2) {
      let len;
      [len, pos] = readVarint(bytes, pos);
      if (pos + len > end) throw new Error('truncated field');
      visit(field, pos, pos + len);
      pos += len;
    } else {
      throw new Error(`unsupported protobuf wire type ${wire}`);
    }
  }
}

/** A graph's metadata_props (ModelProto field 14: key 1, value 2) as an object; the graph itself is skipped. */
export function readOnnxMetadata(bytes) {
  const text = new TextDecoder();
  const props = {};
  fields(bytes, 0, bytes.length, (field, start, end) => {
    if (field !== 14) return;
    let key = '';
    let value = '';
    fields(bytes, start, end, (f, s, e) => {
      if (f === 1) key = text.decode(bytes.subarray(s, e));
      if (f === 2) value = text.decode(bytes.subarray(s, e));
    });
    props[key] = value;
  });
  return props;
}

/**
 * What a graph's metadata says about its input, checked as runtime.artifacts.graph_spec checks it.
 * `entry`: {file, config, precision} from the manifest; `classNames`: the manifest's.
 */
export function graphSpec(metadata, entry, classNames) {
  const where = `graph ${entry.file}`;
  const get = (key) => {
    if (!(key in metadata)) throw new UserError(`${where} lacks metadata '${key}'; re-export it`);
    return metadata[key];
  };
  let spec;
  try {
    spec = {
      config: get(META.channels).toUpperCase(),
      classNames: JSON.parse(get(META.classNames)),
      imageSize: parseInt(get(META.imageSize), 10),
      mean: JSON.parse(get(META.mean)).map(Number),
      std: JSON.parse(get(META.std)).map(Number),
      resize: get(META.resize),
      interpolation: get(META.interpolation),
      precision: metadata[META.precision] ?? 'fp32',
    };
  } catch (err) {
    if (err instanceof UserError) throw err;
    throw new UserError(`${where} has malformed metadata: ${err.message}`);
  }
  const problems = [];
  const contract = metadata[META.contract] ?? String(CONTRACT_VERSION);
  if (contract !== String(CONTRACT_VERSION)) {
    problems.push(`contract version ${contract}, this page reads ${CONTRACT_VERSION}`);
  }
  if (!CONFIG_NAMES.includes(spec.config)) problems.push(`unknown channels ${spec.config}`);
  if (spec.config !== entry.config) {
    problems.push(`it is for ${spec.config}, but the manifest lists it for ${entry.config}`);
  }
  if (spec.precision !== entry.precision) {
    problems.push(`it holds a ${spec.precision} graph, but the manifest lists it as ${entry.precision}`);
  }
  if (spec.mean.length !== spec.config.length || spec.std.length !== spec.config.length) {
    problems.push(`mean/std have ${spec.mean.length}/${spec.std.length} values for ${spec.config.length} channels`);
  }
  if (!(spec.imageSize > 0)) problems.push(`image size ${spec.imageSize}`);
  if (spec.resize !== RESIZE_MODE || spec.interpolation !== INTERPOLATION) {
    problems.push(`it expects ${spec.resize}/${spec.interpolation} resizing; this page implements ` +
                  `${RESIZE_MODE}/${INTERPOLATION}`);
  }
  if (JSON.stringify(spec.classNames) !== JSON.stringify(classNames)) {
    problems.push('its class names differ from the manifest\'s');
  }
  if (problems.length) throw new UserError(`${where} cannot be used: ${problems.join('; ')}`);
  spec.indices = channelIndices(spec.config);
  return spec;
}

// --- sha256 --------------------------------------------------------------------------------

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, '0')).join('');
}

const K256 = new Uint32Array([
  0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
  0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
  0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
  0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
  0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
  0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
  0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
  0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
]);

/** SHA-256 in plain JavaScript, for pages served over plain http from another machine (no WebCrypto there). */
export function sha256Fallback(bytes) {
  const n = bytes.length;
  const padded = new Uint8Array(Math.ceil((n + 9) / 64) * 64);
  padded.set(bytes);
  padded[n] = 0x80;
  const view = new DataView(padded.buffer);
  view.setUint32(padded.length - 8, Math.floor(n / 0x20000000));
  view.setUint32(padded.length - 4, (n * 8) >>> 0);
  const h = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                             0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
  const w = new Uint32Array(64);
  const rotr = (x, r) => (x >>> r) | (x << (32 - r));
  for (let off = 0; off < padded.length; off += 64) {
    for (let i = 0; i < 16; i++) w[i] = view.getUint32(off + i * 4);
    for (let i = 16; i < 64; i++) {
      const s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >>> 3);
      const s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >>> 10);
      w[i] = (w[i - 16] + s0 + w[i - 7] + s1) >>> 0;
    }
    let [a, b, c, d, e, f, g, hh] = h;
    for (let i = 0; i < 64; i++) {
      const t1 = (hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i]) >>> 0;
      const t2 = ((rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b) ^ (a & c) ^ (b & c))) >>> 0;
      hh = g; g = f; f = e; e = (d + t1) >>> 0; d = c; c = b; b = a; a = (t1 + t2) >>> 0;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
  }
  const out = new DataView(new ArrayBuffer(32));
  h.forEach((v, i) => out.setUint32(i * 4, v));
  return hex(out.buffer);
}

/** The hex sha256 of `bytes` and how it was computed: WebCrypto where the page may use it, else plain JS. */
export async function sha256Hex(bytes) {
  const subtle = globalThis.crypto && globalThis.crypto.subtle;
  if (subtle) return { hex: hex(await subtle.digest('SHA-256', bytes)), by: 'WebCrypto' };
  return { hex: sha256Fallback(bytes), by: 'JavaScript (no WebCrypto outside a secure context)' };
}
