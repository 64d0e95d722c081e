#version 330 core
// One face: every vertex is a UV-grid pixel; its 3D position is fetched from the
// per-frame position-map texture, so the mesh buffers stay static.

uniform sampler2D posmap;   // (S, S) RGB32F: x right, y down (frame pixels), z toward camera
uniform vec2 frame_size;    // (W, H) of the framebuffer in pixels
uniform vec2 z_range;       // (z_min, z_max) over all faces of this frame
uniform float uv_size;      // S
uniform bool shade;         // compute normals for Lambert shading

in ivec2 in_uv;             // (column, row) of this vertex in the UV grid
in ivec4 in_nbr;            // (left column, right column, upper row, lower row), self where off-face

out vec2 v_texcoord;
out vec3 v_normal;

void main() {
    vec3 p = texelFetch(posmap, in_uv, 0).xyz;
    // Frame pixel centres sit at integer x, y; GL pixel centres at +0.5.
    // Row 0 of the frame is row 0 of the framebuffer in memory, so y maps
    // to clip y without a flip and readback needs none either.
    vec2 clip_xy = 2.0 * (p.xy + 0.5) / frame_size - 1.0;
    // Larger z (closer to the camera) -> smaller depth, so the default LESS test keeps it.
    float clip_z = 1.0 - 2.0 * (p.z - z_range.x) / (z_range.y - z_range.x);
    gl_Position = vec4(clip_xy, clip_z, 1.0);
    v_texcoord = (vec2(in_uv) + 0.5) / uv_size;

    v_normal = vec3(0.0, 0.0, 1.0);
    if (shade) {
        vec3 du = texelFetch(posmap, ivec2(in_nbr.y, in_uv.y), 0).xyz
                - texelFetch(posmap, ivec2(in_nbr.x, in_uv.y), 0).xyz;
        vec3 dv = texelFetch(posmap, ivec2(in_uv.x, in_nbr.w), 0).xyz
                - texelFetch(posmap, ivec2(in_uv.x, in_nbr.z), 0).xyz;
        vec3 n = cross(du, dv);  // toward +z on a frontal face (u right, v down)
        float len = length(n);
        v_normal = len > 1e-12 ? n / len : vec3(0.0, 0.0, 1.0);
    }
}
