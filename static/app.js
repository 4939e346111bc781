// Toasts the server asks for with `HX-Trigger: {"toast": {"message": "..."}}`.
document.addEventListener("toast", (event) => {
  const toast = document.createElement("div");
  toast.className = "toast";
  toast.setAttribute("role", "status");
  toast.textContent = event.detail.message;
  document.getElementById("toasts").append(toast);
  setTimeout(() => toast.remove(), 8000);
});
