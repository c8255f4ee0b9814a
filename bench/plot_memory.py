"""Plot the loading backend's memory against messages loaded (bench/results/memory.csv)."""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

rows = list(csv.DictReader(open(sys.argv[1])))
x = [int(r["messages_received"]) / 1000 for r in rows]
fig, ax = plt.subplots(figsize=(7, 3.2), dpi=110)
for key, label in [("vm_rss_kb", "RSS"), ("rss_anon_kb", "private (RssAnon)"), ("rss_shmem_kb", "shared buffers touched (RssShmem)")]:
    ax.plot(x, [int(r[key]) / 1024 for r in rows], label=label)
ax.set_xlabel("messages loaded (thousands)")
ax.set_ylabel("MB")
ax.set_title("Backend memory during load_user_logins()")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
fig.savefig(sys.argv[2])
print(f"wrote {sys.argv[2]}")
