"""A self-contained HTML page that shows a GLB opened as a local file (no network).

Hand-rolled because the usual viewers (<model-viewer>, three.js) load scripts from the network.
The page parses the embedded GLB (positions, indices, TEXCOORD_0 with its base-colour texture, or
COLOR_0) and draws it with WebGL2: drag to orbit, wheel to zoom. Without WebGL2 (or without a
mesh) it plays the embedded turntable frames on a canvas instead. `write_viewer` writes it as
final/index.html.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from sds_core.api import atomic_write

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>__TITLE__</title>
<style>
 body { margin: 0; background: #202124; color: #e8eaed; font: 14px system-ui, sans-serif; }
 header { padding: 8px 12px; } canvas { display: block; margin: 0 auto; background: #fff; }
 a { color: #8ab4f8; } .note { opacity: 0.7; }
</style>
</head>
<body>
<header><b>__TITLE__</b> · <a download="mesh.glb" id="dl">mesh.glb</a>
 <span class="note" id="mode"></span></header>
<canvas id="view" width="640" height="640"></canvas>
<script>
"use strict";
const GLB_URI = __GLB__;
const FRAMES = __FRAMES__;
const canvas = document.getElementById("view");
const modeNote = document.getElementById("mode");
if (GLB_URI) { document.getElementById("dl").href = GLB_URI; }

function dataUriBytes(uri) {
  const raw = atob(uri.slice(uri.indexOf(",") + 1));
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

function parseGlb(bytes) {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(0, true) !== 0x46546c67) throw new Error("not a GLB file");
  let offset = 12, json = null, bin = null;
  while (offset < view.byteLength) {
    const length = view.getUint32(offset, true), type = view.getUint32(offset + 4, true);
    const chunk = bytes.subarray(offset + 8, offset + 8 + length);
    if (type === 0x4e4f534a) json = JSON.parse(new TextDecoder().decode(chunk));
    else if (type === 0x004e4942) bin = chunk;
    offset += 8 + length;
  }
  const TYPES = { 5120: Int8Array, 5121: Uint8Array, 5122: Int16Array, 5123: Uint16Array,
                  5125: Uint32Array, 5126: Float32Array };
  const SIZES = { SCALAR: 1, VEC2: 2, VEC3: 3, VEC4: 4 };
  function accessor(i) {
    const acc = json.accessors[i], bv = json.bufferViews[acc.bufferView];
    const Type = TYPES[acc.componentType], n = acc.count * SIZES[acc.type];
    const start = bin.byteOffset + (bv.byteOffset || 0) + (acc.byteOffset || 0);
    const copy = new Uint8Array(n * Type.BYTES_PER_ELEMENT);
    copy.set(new Uint8Array(bin.buffer, start, copy.length));
    let data = new Type(copy.buffer);
    if (acc.normalized && Type !== Float32Array) {
      const scale = Type === Uint8Array ? 255 : 65535;
      data = Float32Array.from(data, (v) => v / scale);
    }
    return { data: data, size: SIZES[acc.type], min: acc.min, max: acc.max };
  }
  const prims = [];
  for (const mesh of json.meshes || []) for (const p of mesh.primitives) {
    const prim = { position: accessor(p.attributes.POSITION) };
    if (p.indices !== undefined) prim.indices = accessor(p.indices);
    if (p.attributes.TEXCOORD_0 !== undefined) prim.uv = accessor(p.attributes.TEXCOORD_0);
    if (p.attributes.COLOR_0 !== undefined) prim.color = accessor(p.attributes.COLOR_0);
    const mat = p.material !== undefined ? json.materials[p.material] : null;
    const tex = mat && mat.pbrMetallicRoughness && mat.pbrMetallicRoughness.baseColorTexture;
    if (tex) {
      const image = json.images[json.textures[tex.index].source];
      const bv = json.bufferViews[image.bufferView];
      prim.image = new Blob([bin.subarray(bv.byteOffset || 0, (bv.byteOffset || 0) + bv.byteLength)],
                            { type: image.mimeType });
    }
    prims.push(prim);
  }
  return prims;
}

const VS = `#version 300 es
in vec3 aPos; in vec2 aUv; in vec4 aColor;
uniform mat4 uMvp; out vec3 vPos; out vec2 vUv; out vec4 vColor;
void main() { vPos = aPos; vUv = aUv; vColor = aColor; gl_Position = uMvp * vec4(aPos, 1.0); }`;
const FS = `#version 300 es
precision highp float;
in vec3 vPos; in vec2 vUv; in vec4 vColor;
uniform sampler2D uTex; uniform bool uUseTex; uniform vec3 uEye; out vec4 outColor;
void main() {
  vec3 n = normalize(cross(dFdx(vPos), dFdy(vPos)));
  vec3 toEye = normalize(uEye - vPos);
  vec3 albedo = uUseTex ? texture(uTex, vUv).rgb : vColor.rgb;
  outColor = vec4(albedo * (0.35 + 0.65 * abs(dot(n, toEye))), 1.0);
}`;

function mat4Mul(a, b) {
  const o = new Float32Array(16);
  for (let c = 0; c < 4; c++) for (let r = 0; r < 4; r++) {
    let s = 0; for (let k = 0; k < 4; k++) s += a[k * 4 + r] * b[c * 4 + k]; o[c * 4 + r] = s;
  }
  return o;
}
function perspective(fovy, aspect, near, far) {
  const f = 1 / Math.tan(fovy / 2), o = new Float32Array(16);
  o[0] = f / aspect; o[5] = f; o[10] = (far + near) / (near - far); o[11] = -1;
  o[14] = 2 * far * near / (near - far); return o;
}
function lookAt(eye, target, up) {
  const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
  const norm = (v) => { const l = Math.hypot(v[0], v[1], v[2]) || 1; return [v[0] / l, v[1] / l, v[2] / l]; };
  const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
  const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
  const z = norm(sub(eye, target)), x = norm(cross(up, z)), y = cross(z, x);
  return new Float32Array([x[0], y[0], z[0], 0, x[1], y[1], z[1], 0, x[2], y[2], z[2], 0,
                           -dot(x, eye), -dot(y, eye), -dot(z, eye), 1]);
}

function startWebGl(prims) {
  const gl = canvas.getContext("webgl2");
  if (!gl || prims.length === 0) return false;
  function shader(type, src) {
    const s = gl.createShader(type); gl.shaderSource(s, src); gl.compileShader(s);
    if (!gl.getShaderParameter(s, gl.COMPILE_STATUS)) throw new Error(gl.getShaderInfoLog(s));
    return s;
  }
  const prog = gl.createProgram();
  gl.attachShader(prog, shader(gl.VERTEX_SHADER, VS)); gl.attachShader(prog, shader(gl.FRAGMENT_SHADER, FS));
  gl.linkProgram(prog); gl.useProgram(prog);
  let lo = [Infinity, Infinity, Infinity], hi = [-Infinity, -Infinity, -Infinity];
  const draws = prims.map((p) => {
    const vao = gl.createVertexArray(); gl.bindVertexArray(vao);
    function attr(name, acc, fallback) {
      const loc = gl.getAttribLocation(prog, name);
      if (loc < 0) return;
      if (!acc) { gl.disableVertexAttribArray(loc); gl.vertexAttrib4f(loc, ...fallback); return; }
      const buf = gl.createBuffer(); gl.bindBuffer(gl.ARRAY_BUFFER, buf);
      const data = acc.data instanceof Float32Array ? acc.data : Float32Array.from(acc.data, (v) => v / 255);
      gl.bufferData(gl.ARRAY_BUFFER, data, gl.STATIC_DRAW);
      gl.enableVertexAttribArray(loc); gl.vertexAttribPointer(loc, acc.size, gl.FLOAT, false, 0, 0);
    }
    attr("aPos", p.position); attr("aUv", p.uv, [0, 0, 0, 1]); attr("aColor", p.color, [0.8, 0.8, 0.8, 1]);
    const pos = p.position.data;
    for (let i = 0; i < pos.length; i += 3) for (let k = 0; k < 3; k++) {
      lo[k] = Math.min(lo[k], pos[i + k]); hi[k] = Math.max(hi[k], pos[i + k]);
    }
    const draw = { vao: vao, count: p.position.data.length / 3, tex: null };
    if (p.indices) {
      const ibuf = gl.createBuffer(); gl.bindBuffer(gl.ELEMENT_ARRAY_BUFFER, ibuf);
      const idx = Uint32Array.from(p.indices.data);
      gl.bufferData(gl.ELEMENT_ARRAY_BUFFER, idx, gl.STATIC_DRAW); draw.count = idx.length; draw.indexed = true;
    }
    if (p.image && p.uv) {
      createImageBitmap(p.image).then((bitmap) => {
        const tex = gl.createTexture(); gl.bindTexture(gl.TEXTURE_2D, tex);
        gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGB, gl.RGB, gl.UNSIGNED_BYTE, bitmap);
        gl.generateMipmap(gl.TEXTURE_2D); draw.tex = tex;
      });
    }
    return draw;
  });
  const center = [0, 1, 2].map((k) => (lo[k] + hi[k]) / 2);
  const extent = Math.max(hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]) || 1;
  let yaw = 0.6, pitch = 0.35, dist = 2.2 * extent, dragging = null;
  canvas.addEventListener("pointerdown", (e) => { dragging = [e.clientX, e.clientY]; });
  window.addEventListener("pointerup", () => { dragging = null; });
  window.addEventListener("pointermove", (e) => {
    if (!dragging) return;
    yaw -= (e.clientX - dragging[0]) * 0.01;
    pitch = Math.max(-1.5, Math.min(1.5, pitch + (e.clientY - dragging[1]) * 0.01));
    dragging = [e.clientX, e.clientY];
  });
  canvas.addEventListener("wheel", (e) => { e.preventDefault(); dist *= Math.exp(e.deltaY * 0.001); });
  gl.enable(gl.DEPTH_TEST);
  const uMvp = gl.getUniformLocation(prog, "uMvp"), uEye = gl.getUniformLocation(prog, "uEye");
  const uUseTex = gl.getUniformLocation(prog, "uUseTex");
  function frame() {
    if (!dragging) yaw += 0.005;
    const eye = [center[0] + dist * Math.cos(pitch) * Math.sin(yaw), center[1] + dist * Math.sin(pitch),
                 center[2] + dist * Math.cos(pitch) * Math.cos(yaw)];
    const mvp = mat4Mul(perspective(0.8, canvas.width / canvas.height, dist / 100, dist * 10),
                        lookAt(eye, center, [0, 1, 0]));
    gl.viewport(0, 0, canvas.width, canvas.height); gl.clearColor(1, 1, 1, 1);
    gl.clear(gl.COLOR_BUFFER_BIT | gl.DEPTH_BUFFER_BIT);
    gl.uniformMatrix4fv(uMvp, false, mvp); gl.uniform3fv(uEye, eye);
    for (const d of draws) {
      gl.bindVertexArray(d.vao); gl.uniform1i(uUseTex, d.tex ? 1 : 0);
      if (d.tex) { gl.activeTexture(gl.TEXTURE0); gl.bindTexture(gl.TEXTURE_2D, d.tex); }
      if (d.indexed) gl.drawElements(gl.TRIANGLES, d.count, gl.UNSIGNED_INT, 0);
      else gl.drawArrays(gl.TRIANGLES, 0, d.count);
    }
    requestAnimationFrame(frame);
  }
  modeNote.textContent = "· WebGL view of the embedded GLB: drag to orbit, wheel to zoom";
  requestAnimationFrame(frame);
  return true;
}

function startFrames() {
  if (FRAMES.length === 0) { modeNote.textContent = "· nothing to show"; return; }
  let target = canvas;
  if (!target.getContext("2d")) {  // a failed WebGL start holds this canvas: use a fresh one
    target = canvas.cloneNode(); canvas.replaceWith(target);
  }
  const ctx = target.getContext("2d"), images = FRAMES.map((src) => { const i = new Image(); i.src = src; return i; });
  let k = 0;
  modeNote.textContent = "· turntable frames (colour | textureless); WebGL2 is unavailable here";
  setInterval(() => {
    const img = images[k++ % images.length];
    if (!img.complete) return;
    const scale = Math.min(target.width / img.width, target.height / img.height);
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, target.width, target.height);
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(img, 0, (target.height - img.height * scale) / 2, img.width * scale, img.height * scale);
  }, 1000 / 24);
}

let shown = false;
try { shown = GLB_URI ? startWebGl(parseGlb(dataUriBytes(GLB_URI))) : false; }
catch (err) { console.error(err); }
if (!shown) startFrames();
</script>
</body>
</html>
"""


def viewer_html(title: str, glb_uri: str, frames: list[str]) -> str:
    """The page, with the GLB data URI ("" for none) and turntable frame data URIs embedded."""
    return (
        _PAGE.replace("__TITLE__", html.escape(title or "sds"))
        .replace("__GLB__", json.dumps(glb_uri))
        .replace("__FRAMES__", json.dumps(frames))
    )


def write_viewer(out_dir: Path, glb: bytes | None, frames: Sequence[np.ndarray], title: str) -> Path:
    """final/index.html: the GLB embedded as a base64 data URI in a small WebGL viewer (no
    network), plus the turntable frames as a canvas fallback where WebGL is missing."""
    from PIL import Image

    encoded = []
    for frame in frames:
        buffer = io.BytesIO()
        Image.fromarray(frame).save(buffer, format="JPEG", quality=90)
        encoded.append("data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii"))
    glb_uri = "data:model/gltf-binary;base64," + base64.b64encode(glb).decode("ascii") if glb else ""
    return atomic_write(out_dir / "index.html", viewer_html(title, glb_uri, encoded).encode("utf-8"))
