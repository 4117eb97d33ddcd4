/** The operator's phone link page: draws the single-use link as a QR code (SVG, no inline script or style). */

import qrcode from "qrcode-generator";

const holder = document.getElementById("qr");
const link = holder?.dataset.link;
if (holder && link) {
  const qr = qrcode(0, "M");
  qr.addData(link);
  qr.make();
  const svg = new DOMParser().parseFromString(qr.createSvgTag({ cellSize: 6, margin: 4 }), "image/svg+xml");
  holder.appendChild(document.importNode(svg.documentElement, true));
}
