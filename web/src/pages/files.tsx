// Files shared between the user's devices: the list with each file's live
// 2-bit upload status (01 needs upload, 10 uploading, 11 uploaded, 00
// failed), resumable uploads (tus) with progress bars, pause and resume, and
// downloads, refused with the reason until a file is whole.
import { useEffect, useRef, useState } from "preact/hooks";
import { Upload } from "tus-js-client";
import { ApiError, describe, type FileRecord } from "../api";
import { ErrorLine, When, useCtx } from "../app";
import { size } from "../limits";

const BASE = "/v1/services/files";
const STATUS: Record<FileRecord["status"], string> = {
  "01": "needs upload",
  "10": "uploading",
  "11": "uploaded",
  "00": "failed",
};

interface Sending {
  key: string;
  name: string;
  sent: number;
  total: number;
  state: "uploading" | "paused" | "done" | "failed";
  error?: string;
  upload: Upload;
}

export function FilesPage() {
  const { api, inbox, session } = useCtx();
  const [files, setFiles] = useState<FileRecord[] | null>(null);
  // Every status each file was seen in on this page, in order: a status
  // that lasted an instant still shows.
  const [trail, setTrail] = useState<Record<string, string[]>>({});
  const [sending, setSending] = useState<Sending[]>([]);
  const [error, setError] = useState<string | null>(null);
  const [refusals, setRefusals] = useState<Record<string, string>>({});
  const sendingRef = useRef(sending);
  sendingRef.current = sending;

  function seen(records: FileRecord[]) {
    setTrail((t) => {
      const next = { ...t };
      for (const r of records) {
        const list = next[r.id] ?? [];
        if (list[list.length - 1] !== r.status) next[r.id] = [...list, r.status];
      }
      return next;
    });
  }

  function merge(record: FileRecord) {
    seen([record]);
    setFiles((fs) => {
      const list = fs ?? [];
      const i = list.findIndex((f) => f.id === record.id);
      if (i < 0) return [record, ...list];
      const copy = list.slice();
      copy[i] = record;
      return copy;
    });
    if (record.status === "11") setRefusals(({ [record.id]: _, ...rest }) => rest);
  }

  async function load() {
    try {
      const r = await api.get<{ files: FileRecord[] }>(`${BASE}/files`);
      const sorted = r.files.sort((a, b) => b.updated_at.localeCompare(a.updated_at));
      seen(sorted);
      setFiles(sorted);
      setError(null);
    } catch (e) {
      setError(e instanceof ApiError && e.code === "unknown_service" ? "File sync is not offered by this gateway." : describe(e));
    }
  }

  useEffect(() => {
    void load();
    const off = inbox.on((e) => {
      if (e.kind === "files.file.updated" || e.kind === "files.file.available") merge(e.data as FileRecord);
      else if (e.kind === "files.file.deleted") setFiles((fs) => (fs ?? []).filter((f) => f.id !== e.data.id));
    });
    return off;
  }, [api, inbox]);

  // Offsets of uploads in progress (elsewhere too) are read, not pushed.
  const anyUploading = files?.some((f) => f.status === "10") ?? false;
  useEffect(() => {
    if (!anyUploading) return;
    const timer = setInterval(() => void load(), 2000);
    return () => clearInterval(timer);
  }, [api, anyUploading]);

  // Leaving the page stops this page's uploads; they resume from where the
  // gateway stands when the same file is chosen again.
  useEffect(() => () => sendingRef.current.forEach((s) => s.state === "uploading" && void s.upload.abort()), []);

  function update(key: string, change: Partial<Sending>) {
    setSending((list) => list.map((s) => (s.key === key ? { ...s, ...change } : s)));
  }

  function send(file: File) {
    const key = crypto.randomUUID();
    const upload = new Upload(file, {
      endpoint: new URL(`${BASE}/uploads`, location.href).href,
      headers: { authorization: `Bearer ${session.token}` },
      metadata: { filename: file.name, filetype: file.type || "application/octet-stream" },
      chunkSize: 1024 * 1024,
      retryDelays: [0, 1000, 3000, 5000, 10000],
      removeFingerprintOnSuccess: true,
      onProgress: (sent, total) => update(key, { sent, total }),
      // What the gateway has stored, once each chunk is acknowledged.
      onChunkComplete: (_chunk, accepted, total) => update(key, { sent: accepted, total }),
      onSuccess: () => update(key, { state: "done" }),
      onError: (err) => {
        const body = (err as { originalResponse?: { getBody(): string } }).originalResponse?.getBody();
        let message = err.message;
        try {
          message = body ? JSON.parse(body).error.message : message;
        } catch {
          // keep tus-js-client's message
        }
        update(key, { state: "failed", error: message });
      },
    });
    setSending((list) => [{ key, name: file.name, sent: 0, total: file.size, state: "uploading", upload }, ...list]);
    // A previous upload of the same file (this browser's storage) resumes
    // where it stopped; storage that cannot be read only means a new one.
    upload
      .findPreviousUploads()
      .catch(() => [])
      .then((previous) => {
        if (previous.length) upload.resumeFromPreviousUpload(previous[0]);
        upload.start();
      });
  }

  async function download(f: FileRecord) {
    setRefusals(({ [f.id]: _, ...rest }) => rest);
    try {
      const r = await api.request("GET", `${BASE}/files/${encodeURIComponent(f.id)}/content`);
      const url = URL.createObjectURL(await r.blob());
      const a = document.createElement("a");
      a.href = url;
      a.download = f.name;
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 10_000);
    } catch (e) {
      setRefusals((r) => ({ ...r, [f.id]: describe(e) }));
    }
  }

  async function remove(f: FileRecord) {
    if (!confirm(`Delete ${f.name} from every device?`)) return;
    try {
      await api.request("DELETE", `${BASE}/files/${encodeURIComponent(f.id)}`);
      setFiles((fs) => (fs ?? []).filter((x) => x.id !== f.id));
    } catch (e) {
      setError(describe(e));
    }
  }

  return (
    <>
      <h1>Files</h1>
      <section class="card" aria-labelledby="upload-title">
        <h2 id="upload-title">Upload</h2>
        <label for="upload">Choose files to share with your devices</label>
        <input
          id="upload"
          type="file"
          multiple
          onChange={(e) => {
            Array.from(e.currentTarget.files ?? []).forEach(send);
            e.currentTarget.value = "";
          }}
        />
        <ul class="rows">
          {sending.map((s) => (
            <li key={s.key} class="row upload" data-testid="upload">
              <div class="grow">
                <label for={`p-${s.key}`}>
                  {s.name}:{" "}
                  {s.state === "done" ? "uploaded" : s.state === "failed" ? "failed" : s.state === "paused" ? "paused" : "uploading"} (
                  {size(s.sent)} of {size(s.total)})
                </label>
                <progress id={`p-${s.key}`} max={s.total || 1} value={s.sent} />
                {s.error && <p class="error">{s.error}</p>}
              </div>
              {s.state === "uploading" && (
                <button
                  type="button"
                  class="secondary"
                  onClick={() => {
                    void s.upload.abort();
                    update(s.key, { state: "paused" });
                  }}
                >
                  Pause
                </button>
              )}
              {(s.state === "paused" || s.state === "failed") && (
                <button
                  type="button"
                  class="secondary"
                  onClick={() => {
                    update(s.key, { state: "uploading", error: undefined });
                    s.upload.start();
                  }}
                >
                  Resume
                </button>
              )}
            </li>
          ))}
        </ul>
      </section>
      <section aria-labelledby="files-title">
        <h2 id="files-title">Your files</h2>
        <ErrorLine error={error} />
        {files && files.length === 0 && <p>No file yet.</p>}
        <table class="files" data-testid="files">
          <caption class="sr-only">Files with their upload status</caption>
          <thead>
            <tr>
              <th scope="col">Name</th>
              <th scope="col">Status</th>
              <th scope="col">Size</th>
              <th scope="col">
                <span class="sr-only">Actions</span>
              </th>
            </tr>
          </thead>
          <tbody>
            {(files ?? []).map((f) => (
              <tr key={f.id} data-file={f.name}>
                <th scope="row">
                  {f.name}
                  <div class="hint">
                    <When at={f.updated_at} />
                  </div>
                </th>
                <td>
                  <span class={`badge s${f.status}`} data-testid="file-status">
                    {f.status}
                  </span>{" "}
                  {STATUS[f.status]}
                  {f.status !== "11" && f.size > 0 && <progress max={f.size} value={f.offset} aria-label={`${f.name} stored so far`} />}
                  {f.reason && <div class="hint">{f.reason}</div>}
                  <div class="hint" data-testid="file-trail">
                    seen: {(trail[f.id] ?? [f.status]).join(" → ")}
                  </div>
                </td>
                <td>{size(f.size)}</td>
                <td>
                  <div class="actions">
                    <button type="button" class="secondary" onClick={() => download(f)} aria-label={`Download ${f.name}`}>
                      Download
                    </button>
                    <button type="button" class="secondary" onClick={() => remove(f)} aria-label={`Delete ${f.name}`}>
                      Delete
                    </button>
                  </div>
                  {refusals[f.id] && (
                    <p class="error" role="alert" data-testid="download-refused">
                      {refusals[f.id]}
                    </p>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </section>
    </>
  );
}
