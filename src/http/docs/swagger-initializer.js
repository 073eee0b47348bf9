// Starts Swagger UI on this server's own document. Everything it loads comes from this
// origin: no validator badge (validatorUrl null), no top bar to fetch other documents.
window.addEventListener("load", function () {
  window.ui = SwaggerUIBundle({
    url: "/openapi.json",
    dom_id: "#swagger-ui",
    deepLinking: true,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    validatorUrl: null,
    displayRequestDuration: true,
    tryItOutEnabled: false,
  });
});
