// What each network will do with the user's input, told before sending: the
// same rules the gateway applies (texts cut to the connector's limits, moods
// outside a closed vocabulary not sent, avatars converted, scaled down or
// re-encoded to fit the connector's avatar limits).
import type { Module } from "./api";

export interface ImageFacts {
  type: string;
  bytes: number;
  width: number;
  height: number;
}

/** What the gateway will do with `image` for `module`, in words. */
export function avatarPlan(module: Module, image: ImageFacts): { fits: boolean; notes: string[] } {
  if (!module.fields.includes("avatar")) return { fits: false, notes: ["does not take avatars: not sent"] };
  const limits = module.limits.avatar;
  if (!limits) return { fits: true, notes: ["sent as is"] };
  const notes: string[] = [];
  const formatOk = limits.formats.length === 0 || limits.formats.includes(image.type);
  const side = Math.max(image.width, image.height);
  if (!formatOk) notes.push(`converted from ${short(image.type)} to ${short(limits.formats[0])}`);
  if (side > limits.max_pixels) {
    const scale = limits.max_pixels / side;
    const w = Math.max(1, Math.round(image.width * scale));
    const h = Math.max(1, Math.round(image.height * scale));
    notes.push(`scaled down from ${image.width}×${image.height} to at most ${w}×${h}`);
  }
  if (image.bytes > limits.max_bytes) notes.push(`re-encoded from ${size(image.bytes)} to at most ${size(limits.max_bytes)}`);
  if (notes.length === 0) return { fits: true, notes: ["sent as is"] };
  return { fits: false, notes };
}

/** What happens to a text field on `module`, or null when it goes as typed. */
export function textPlan(module: Module, field: "signature" | "mood", value: string): string | null {
  if (value === "") return null;
  if (!module.fields.includes(field)) return `does not take a ${field}: not sent`;
  if (field === "mood" && module.moods.length > 0) {
    const match = module.moods.find((m) => m.toLowerCase() === value.toLowerCase());
    if (!match) return `knows only the moods ${module.moods.join(", ")}: not sent`;
    if (match !== value) return `sent as “${match}”`;
  }
  const max = field === "signature" ? module.limits.max_signature_chars : module.limits.max_mood_chars;
  const length = [...value].length;
  if (max != null && length > max) return `cut to ${max} characters (you typed ${length})`;
  return null;
}

/** Limits of a module in one short line. */
export function limitsLine(module: Module): string {
  const parts: string[] = [];
  const l = module.limits;
  if (module.fields.includes("signature"))
    parts.push(l.max_signature_chars != null ? `signature ≤ ${l.max_signature_chars} chars` : "signature");
  if (module.fields.includes("mood"))
    parts.push(
      l.max_mood_chars != null ? `mood ≤ ${l.max_mood_chars} chars` : module.moods.length ? `mood: ${module.moods.join("/")}` : "mood",
    );
  if (module.fields.includes("avatar")) {
    const a = l.avatar;
    parts.push(a ? `avatar ≤ ${a.max_pixels}px, ≤ ${size(a.max_bytes)}, ${a.formats.map(short).join("/")}` : "avatar");
  }
  return parts.join(" · ");
}

export function size(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${+(bytes / 1024).toFixed(1)} KiB`;
  if (bytes < 1024 * 1024 * 1024) return `${+(bytes / 1024 / 1024).toFixed(1)} MiB`;
  return `${+(bytes / 1024 / 1024 / 1024).toFixed(2)} GiB`;
}

function short(type: string): string {
  return type.replace(/^image\//, "").toUpperCase();
}
