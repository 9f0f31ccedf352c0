// Builds the emoji training set from the npm packages in ./node_modules.
//
// Names come from emoji-datasource ("slice of pizza"), labels and tags
// from emojibase ("pizza"; "cheese", "slice").
//
// Output (in the folder given as argv[2], default ./data):
//   images.u8   N x 64 x 64 x 3 bytes, RGB, composited on white
//   meta.json   one record per image: name, tags, style, category,
//               subcategory, split ("train" | "heldout"), and the package
//               versions with a checksum over them.
//
// Only art whose licence allows it: Noto (Apache 2.0) and Twemoji (CC-BY 4.0).
// Skin-tone variants are left out (1,911 emoji per style). The held-out split
// is one style of every eighth emoji, chosen by a hash of its code point so it
// never depends on file order.
'use strict';
const fs = require('fs');
const path = require('path');
const crypto = require('crypto');
const { PNG } = require('pngjs');

const kStyles = [
  { pkg: 'emoji-datasource-google', dir: 'google', word: 'noto',
    art: 'Noto Color Emoji', license: 'Apache-2.0',
    source: 'https://github.com/googlefonts/noto-emoji' },
  { pkg: 'emoji-datasource-twitter', dir: 'twitter', word: 'twemoji',
    art: 'Twemoji', license: 'CC-BY-4.0',
    source: 'https://github.com/jdecked/twemoji' },
];
const kSize = 64;

function moduleDir(name) { return path.join(__dirname, 'node_modules', name); }
function version(name) {
  return JSON.parse(fs.readFileSync(path.join(moduleDir(name), 'package.json'))).version;
}
function hash32(text) {
  return crypto.createHash('sha256').update(text).digest().readUInt32BE(0);
}

function compositeOnWhite(png) {
  if (png.width !== kSize || png.height !== kSize) {
    throw new Error(`expected ${kSize}x${kSize}, got ${png.width}x${png.height}`);
  }
  const out = Buffer.alloc(kSize * kSize * 3);
  for (let i = 0; i < kSize * kSize; ++i) {
    const a = png.data[4 * i + 3] / 255;
    for (let c = 0; c < 3; ++c) {
      out[3 * i + c] = Math.round(png.data[4 * i + c] * a + 255 * (1 - a));
    }
  }
  return out;
}

function main() {
  const outDir = path.resolve(process.argv[2] || path.join(__dirname, 'data'));
  fs.mkdirSync(outDir, { recursive: true });
  const packages = {};
  for (const name of ['emoji-datasource-google', 'emoji-datasource-twitter',
                      'emojibase-data', 'pngjs']) {
    packages[name] = version(name);
  }
  const checksum = crypto.createHash('sha256')
      .update(JSON.stringify(packages)).digest('hex');

  const baseByHex = new Map();
  for (const e of require(path.join(moduleDir('emojibase-data'), 'en', 'data.json'))) {
    baseByHex.set(e.hexcode, e);
  }
  const emoji = require(path.join(moduleDir(kStyles[0].pkg), 'emoji.json'))
      .filter((e) => kStyles.every((s) => e[`has_img_${s.dir}`]))
      .sort((a, b) => a.sort_order - b.sort_order);

  const records = [];
  const chunks = [];
  for (const e of emoji) {
    const hex = e.unified;
    const base = baseByHex.get(hex) || baseByHex.get(hex.replace(/-FE0F/g, '')) ||
                 baseByHex.get(e.non_qualified || '') || {};
    const tags = base.tags || [];
    const h = hash32(hex);
    // The shipped split, as it is: `>>` reads h as signed, so where h's top
    // bit is set (h % 8 is 0 for an eighth of the emoji) the remainder is -0
    // (noto) or -1 (no style held out). About one emoji in eleven gives up a
    // style, noto twice as often as twemoji: 187 images. `>>>` would hold
    // out one of every eighth evenly, and change the split the bundle was
    // trained and measured on.
    const heldOutStyle = h % 8 === 0 ? (h >> 8) % kStyles.length : -1;
    kStyles.forEach((style, s) => {
      const file = path.join(moduleDir(style.pkg), 'img', style.dir, '64', e.image);
      const png = PNG.sync.read(fs.readFileSync(file));
      chunks.push(compositeOnWhite(png));
      records.push({
        unified: hex,
        name: e.name.toLowerCase(),
        label: (base.label || e.name).toLowerCase(),
        short_names: e.short_names,
        tags,
        style: style.word,
        category: e.category,
        subcategory: e.subcategory,
        split: s === heldOutStyle ? 'heldout' : 'train',
      });
    });
  }
  const images = Buffer.concat(chunks);
  fs.writeFileSync(path.join(outDir, 'images.u8'), images);
  const meta = {
    image_size: kSize,
    channels: 3,
    background: 'white',
    packages,
    packages_sha256: checksum,
    images_sha256: crypto.createHash('sha256').update(images).digest('hex'),
    styles: kStyles.map(({ word, art, license, source, pkg }) =>
      ({ word, art, license, source, package: pkg })),
    records,
  };
  fs.writeFileSync(path.join(outDir, 'meta.json'), JSON.stringify(meta));
  const held = records.filter((r) => r.split === 'heldout').length;
  console.log(`${records.length} images (${held} held out), ` +
              `${new Set(records.map((r) => r.subcategory)).size} subcategories, ` +
              `packages sha256 ${checksum.slice(0, 16)}, images sha256 ` +
              `${meta.images_sha256.slice(0, 16)} -> ${outDir}`);
}

main();
