// The key form: POST the key to /api/m1/session (which sets the HttpOnly cookie), then open the page.
const form = document.getElementById("login");
const error = document.getElementById("login-error");

function show(message) {
  error.textContent = message;
  error.hidden = false;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.hidden = true;
  const key = document.getElementById("key").value.trim();
  try {
    const response = await fetch("/api/m1/session", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ key }),
      credentials: "same-origin",
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      show(body.detail || `login failed (${response.status})`);
      return;
    }
    if (body.role !== "viewer" && body.role !== "admin") {
      show(`the key's role (${body.role}) cannot read the dashboard: use a viewer or admin key`);
      return;
    }
    window.location.assign("/dashboard");
  } catch (failure) {
    show(`the server cannot be reached: ${failure}`);
  }
});
